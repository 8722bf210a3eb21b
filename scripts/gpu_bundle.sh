#!/usr/bin/env bash
# Packs what a GPU machine needs to run the CUDA backend's checks into one
# folder: the server, client and benchmark binaries, the gpu-labelled test
# executables (plus the metrics test), the CUDA module, and every shared
# library they load except the C library and CUDA's own (the GPU machine has
# the CUDA toolkit but none of Debian's -dev packages). A launcher, `run`,
# sets the library path. Binaries are stripped to keep it small.
#   usage: scripts/gpu_bundle.sh [BUILD_DIR] [OUT_DIR]   (build, gpu-bundle)
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
out="${2:-gpu-bundle}"
limit_mib=60

[[ -f "${build}/lib/libkvsession_cuda.so" ]] || {
  echo "gpu_bundle: ${build} has no CUDA module; configure with -DKVSESSION_CUDA=ON" >&2
  exit 1
}
rm -rf "${out}"
mkdir -p "${out}/bin" "${out}/lib"

bins=()
for b in kvsession-server kvsession-chat kvsession-generate kvsession-bench \
         kvsession-bench-gpu; do
  [[ -x "${build}/bin/${b}" ]] && bins+=("${build}/bin/${b}")
done
# Test executables of the gpu label, from CTest's own listing.
mapfile -t tests < <(ctest --test-dir "${build}" -L gpu --show-only=json-v1 |
  python3 -c '
import json, sys
seen = set()
for t in json.load(sys.stdin).get("tests", []):
    cmd = t.get("command") or []
    if cmd and cmd[0] not in seen:
        seen.add(cmd[0]); print(cmd[0])')
for t in metrics_integration_test; do
  [[ -x "${build}/bin/${t}" ]] && tests+=("${build}/bin/${t}")
done
for f in "${bins[@]}" "${tests[@]}"; do
  install -m 755 "${f}" "${out}/bin/"
done
install -m 755 "${build}/lib/libkvsession_cuda.so" "${out}/lib/"

# Shared libraries, resolved here; the C library and CUDA's stay behind.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libcuda\.so|libcudart|libcublas|libnvidia)'
for f in "${out}"/bin/* "${out}"/lib/libkvsession_cuda.so; do
  ldd "${f}" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ "${name}" =~ ${skip} ]] && continue
  [[ -e "${out}/lib/${name}" ]] || cp -L "${path}" "${out}/lib/${name}"
done
strip --strip-unneeded "${out}"/bin/* "${out}"/lib/* 2>/dev/null || true

cat > "${out}/run" <<'LAUNCH'
#!/usr/bin/env bash
# Runs a bundled program with the bundle's libraries and CUDA's.
here="$(cd "$(dirname "$0")" && pwd)"
dirs="${here}/lib"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -d "${d}" ]] && dirs="${dirs}:${d}"
done
if ! ls /usr/local/cuda/lib64/libcublasLt.so.* >/dev/null 2>&1; then
  lt="$(find / -xdev -name 'libcublasLt.so.1*' 2>/dev/null | head -n 1)"
  [[ -n "${lt}" ]] && dirs="${dirs}:$(dirname "${lt}")"
fi
export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
prog="$1"
shift
exec "${here}/bin/${prog}" "$@"
LAUNCH
chmod 755 "${out}/run"
cp scripts/gpu_check.sh "${out}/"

size_mib=$(( $(du -sk "${out}" | cut -f1) / 1024 ))
echo "gpu_bundle: ${out} (${size_mib} MiB): $(ls "${out}/bin" | wc -l) programs, $(ls "${out}/lib" | wc -l) libraries" >&2
if (( size_mib > limit_mib )); then
  echo "gpu_bundle: over the ${limit_mib} MiB limit" >&2
  exit 1
fi
