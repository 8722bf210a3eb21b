// Helpers the model tests share (CPU and CUDA backends).
#ifndef KVSESSION_TESTS_RUNTIME_MODEL_TEST_UTIL_H_
#define KVSESSION_TESTS_RUNTIME_MODEL_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/model.h"
#include "runtime/sequence_runner.h"

namespace kvsession::testing {

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed);

// A runner with `max_tokens` of KV; shuffle != 0 hands out blocks in a
// random order.
std::unique_ptr<runtime::SequenceRunner> MakeRunner(runtime::Model* model,
                                                    int32_t max_tokens,
                                                    uint64_t shuffle,
                                                    int32_t chunk);

// The f16 bits of one token's K and V across all layers (read through the
// backend, so the arena may be device memory).
std::vector<uint16_t> TokenKv(const runtime::SequenceRunner& r, int32_t pos);

bool BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace kvsession::testing

#endif  // KVSESSION_TESTS_RUNTIME_MODEL_TEST_UTIL_H_
