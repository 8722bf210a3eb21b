#!/usr/bin/env bash
# Generates the Python stubs of the kvsession API into OUT_DIR (default: next
# to this script). Needs Debian's protobuf-compiler, python3-grpcio and
# grpc_python_plugin (package protobuf-compiler-grpc); python3-grpc-tools
# bundles a protoc too old for this proto.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
out="${1:-${here}}"
protoc -I "${root}/proto" --python_out="${out}" --grpc_out="${out}" \
  --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin \
  "${root}/proto/kvsession/v1/kvsession.proto"
touch "${out}/kvsession/__init__.py" "${out}/kvsession/v1/__init__.py"
