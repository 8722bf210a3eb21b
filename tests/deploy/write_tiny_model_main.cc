// Writes the tiny random-weight test model (tests/runtime/tiny_model.h) to
// the path given, so that script tests can start kvsession-server processes
// on it.
#include <cstdio>

#include "tests/runtime/tiny_model.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT.gguf\n", argv[0]);
    return 2;
  }
  const absl::Status status = kvsession::testing::WriteTinyModel(
      kvsession::testing::TinyModelOptions(), argv[1]);
  if (!status.ok()) {
    std::fprintf(stderr, "error: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
