#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine and builds Release into
# build/. Safe to re-run.
#   KVSESSION_BUILD_DIR  build folder (default build)
#   KVSESSION_CUDA       AUTO (default: on when nvcc is found), ON or OFF
#   KVSESSION_SKIP_APT=1 skip the package installation
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${KVSESSION_BUILD_DIR:-build}"
cuda="${KVSESSION_CUDA:-AUTO}"

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-dev libpcre2-dev
  python3 python3-pip python3-grpcio
)

if [[ "${KVSESSION_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$p")
  done
  if ((${#missing[@]})); then
    sudo_cmd=()
    [[ "$(id -u)" -eq 0 ]] || sudo_cmd=(sudo)
    echo "setup: installing ${missing[*]}" >&2
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# CUDA lives outside Debian's paths.
if [[ -d /usr/local/cuda/bin ]]; then export PATH="/usr/local/cuda/bin:${PATH}"; fi

model="$(scripts/fetch_model.sh)"
echo "setup: model at ${model}" >&2

cmake -S . -B "${build_dir}" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DKVSESSION_CUDA="${cuda}" >/dev/null
cmake --build "${build_dir}" -j 2
echo "setup: built into ${build_dir}/bin" >&2
