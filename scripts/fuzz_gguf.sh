#!/usr/bin/env bash
# Builds the GGUF fuzzer in build-fuzz/ and runs it for N seconds (default 60).
#
#   scripts/fuzz_gguf.sh [SECONDS] [extra libFuzzer flags...]
#
# The corpus grows in build-fuzz/fuzz/gguf_corpus across runs; crashes land in
# build-fuzz/fuzz/artifacts/. Reproduce one with:
#   build-fuzz/bin/gguf_fuzzer build-fuzz/fuzz/artifacts/crash-...
set -euo pipefail

seconds="${1:-60}"
shift || true
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${root}/build-fuzz"
jobs="${KVSESSION_JOBS:-2}"

CC=clang CXX=clang++ cmake -S "${root}" -B "${build}" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSESSION_FUZZ=ON -DKVSESSION_CUDA=OFF \
  >/dev/null
ninja -C "${build}" -j "${jobs}" gguf_fuzzer

fuzzer="${build}/bin/gguf_fuzzer"
work="${build}/fuzz"
corpus="${work}/gguf_corpus"
seeds="${work}/gguf_seeds"
mkdir -p "${corpus}" "${work}/artifacts"
"${fuzzer}" --write-seeds "${seeds}"

# Seeds are a read-only second corpus directory; new inputs go to ${corpus}.
"${fuzzer}" "${corpus}" "${seeds}" \
  -dict="${work}/gguf.dict" \
  -max_total_time="${seconds}" \
  -max_len=8192 \
  -rss_limit_mb=2048 \
  -timeout=10 \
  -print_final_stats=1 \
  -artifact_prefix="${work}/artifacts/" \
  "$@"
