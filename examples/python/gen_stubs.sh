#!/usr/bin/env bash
# Generates the Python stubs of the kvsession API next to this script.
# Needs Debian's protobuf-compiler, python3-grpcio and grpc_python_plugin
# (package protobuf-compiler-grpc); python3-grpc-tools bundles a protoc too
# old for this proto.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
protoc -I "${root}/proto" --python_out="${here}" --grpc_out="${here}" \
  --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin \
  "${root}/proto/kvsession/v1/kvsession.proto"
touch "${here}/kvsession/__init__.py" "${here}/kvsession/v1/__init__.py"
