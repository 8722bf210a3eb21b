#!/usr/bin/env bash
# Runs the whole test suite against the build of scripts/setup.sh: unit and
# integration tests, then the end-to-end tests on the default model and
# Gemma 3 270M (one at a time: each uses every core), then the unit and integration tests again
# under ASan + UBSan (scripts/test_sanitizers.sh). gpu tests skip without a
# GPU.
#   KVSESSION_SKIP_SANITIZERS=1  skip the sanitizer build
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${KVSESSION_BUILD_DIR:-build}"
KVSESSION_MODEL="$(scripts/fetch_model.sh)"
KVSESSION_GEMMA3_MODEL="$(scripts/fetch_model.sh gemma3-270m)"
export KVSESSION_MODEL KVSESSION_GEMMA3_MODEL
ctest --test-dir "${build_dir}" --output-on-failure -j 2 --timeout 600 -LE e2e
ctest --test-dir "${build_dir}" --output-on-failure -j 1 --timeout 600 -L e2e
if [[ "${KVSESSION_SKIP_SANITIZERS:-0}" != 1 ]]; then
  scripts/test_sanitizers.sh
fi
