#!/usr/bin/env bash
# Runs examples/python/two_turn_chat.py (Debian's python3-grpcio, stubs
# generated from the proto) against kvsession-server on the default model.
# Usage: python_example_test.sh SERVER_BIN
set -euo pipefail
server_bin="$1"
root="$(cd "$(dirname "$0")/../.." && pwd)"
: "${KVSESSION_MODEL:?KVSESSION_MODEL must name the default model}"
work="$(mktemp -d)"
cp "${root}/examples/python/two_turn_chat.py" "${work}/"
"${root}/examples/python/gen_stubs.sh" "${work}"
port="$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"${server_bin}" --model "${KVSESSION_MODEL}" --host 127.0.0.1 --port "${port}" \
  --log_turns=false --metrics_port=0 > "${work}/server.log" 2>&1 &
server=$!
trap 'kill ${server} 2>/dev/null || true; wait ${server} 2>/dev/null || true; rm -rf "${work}"' EXIT
for _ in $(seq 100); do
  grep -q "chat with it" "${work}/server.log" && break
  sleep 0.1
done
/usr/bin/python3 "${work}/two_turn_chat.py" --addr "127.0.0.1:${port}"
