#!/usr/bin/env bash
# Builds the project with AddressSanitizer + UndefinedBehaviorSanitizer into
# build-asan/ and runs the unit and integration tests there (leak checking
# on). Part of scripts/test.sh.
#   KVSESSION_ASAN_BUILD_DIR  build folder (default build-asan)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${KVSESSION_ASAN_BUILD_DIR:-build-asan}"
cmake -S . -B "${dir}" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKVSESSION_CUDA=OFF -DKVSESSION_SANITIZE=address,undefined >/dev/null
cmake --build "${dir}" -j 2
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir "${dir}" --output-on-failure -j 2 --timeout 900 -LE e2e
