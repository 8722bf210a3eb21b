#!/usr/bin/env bash
# Runs on the GPU machine, from a bundle made by scripts/gpu_bundle.sh: the
# gpu-labelled tests, an end-to-end multi-turn run of the server on the
# default model (kvsession-bench's workloads over gRPC, with a metrics
# scrape), and the GPU benchmark. Each part has its own time limit; logs and
# a summary go to LOG_DIR.
#   usage: gpu_check.sh LOG_DIR [MODEL_GGUF]
#   GPU_CHECK_PARTS  which parts (default "tests e2e bench")
#   GPU_CHECK_BENCH_ARGS  extra flags for kvsession-bench-gpu
#   GPU_CHECK_TEST_TIMEOUT  seconds per test program (default 240)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
logs="${1:?usage: gpu_check.sh LOG_DIR [MODEL_GGUF]}"
model="${2:-}"
parts="${GPU_CHECK_PARTS:-tests e2e bench}"
# Seconds each test program may run (the attention grid is the longest).
test_timeout="${GPU_CHECK_TEST_TIMEOUT:-240}"
mkdir -p "${logs}"
summary="${logs}/summary.txt"
: > "${summary}"
note() { echo "$*" | tee -a "${summary}"; }

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
  --format=csv > "${logs}/gpu.txt" 2>&1 || true
note "gpu: $(tail -n 1 "${logs}/gpu.txt") ($(date -u +%FT%TZ))"

if [[ " ${parts} " == *" tests "* ]]; then
  for t in "${here}"/bin/*_test; do
    name="$(basename "${t}")"
    start=$(date +%s)
    KVSESSION_MODEL="${model}" timeout "${test_timeout}" \
      "${here}/run" "${name}" --gtest_brief=1 > "${logs}/${name}.log" 2>&1
    rc=$?
    result=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "${logs}/${name}.log" |
             tr '\n' ' ')
    note "test ${name}: rc=${rc} $(( $(date +%s) - start ))s ${result}"
  done
fi

if [[ " ${parts} " == *" e2e "* && -n "${model}" ]]; then
  port=50151
  mport=9191
  "${here}/run" kvsession-server --model "${model}" --device cuda \
    --port ${port} --metrics_port ${mport} --log_turns=false \
    > "${logs}/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 120); do
    grep -q "listening\|chat with it" "${logs}/server.log" 2>/dev/null && break
    sleep 0.5
  done
  timeout 120 "${here}/run" kvsession-bench --addr "localhost:${port}" \
    --workload all --single_repeats 2 --sessions 16 --clients 4 \
    > "${logs}/e2e_bench.log" 2>&1
  note "e2e kvsession-bench on cuda: rc=$?"
  if command -v curl >/dev/null; then
    curl -s "http://localhost:${mport}/metrics" > "${logs}/metrics.txt"
  else
    python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://localhost:${mport}/metrics').read().decode())" \
      > "${logs}/metrics.txt" 2>&1
  fi
  note "e2e metrics scrape: $(grep -c '^kvsession_' "${logs}/metrics.txt") series, backend: $(grep -m1 'backend' "${logs}/server.log")"
  kill -TERM "${server}" 2>/dev/null
  wait "${server}" 2>/dev/null
fi

if [[ " ${parts} " == *" bench "* ]]; then
  # shellcheck disable=SC2086
  timeout 240 "${here}/run" kvsession-bench-gpu ${model:+--model "${model}"} \
    ${GPU_CHECK_BENCH_ARGS:-} > "${logs}/bench_gpu.md" 2>&1
  note "bench kvsession-bench-gpu: rc=$?"
fi
note "done $(date -u +%FT%TZ)"
