// An independent, deliberately plain forward pass in double precision over
// dequantized weights, with a contiguous KV cache: the model tests compare
// the engine's paged, quantized-activation forward against it. It covers
// the families of runtime/arch/ from their published definitions (llama;
// qwen2's biases; qwen3's q/k norms; Gemma 3's scaled embedding, post-norms,
// GELU and 5:1 sliding-window layers), reading what it needs from the GGUF
// itself rather than from the engine's configuration.
#ifndef KVSESSION_TESTS_RUNTIME_REFERENCE_FORWARD_H_
#define KVSESSION_TESTS_RUNTIME_REFERENCE_FORWARD_H_

#include <cstdint>
#include <vector>

#include "runtime/gguf.h"
#include "runtime/model_config.h"

namespace kvsession::testing {

// Logits [tokens.size()][vocab] of every position.
std::vector<std::vector<double>> ReferenceLogits(
    const runtime::GgufFile& file, const runtime::ModelConfig& config,
    const std::vector<int32_t>& tokens);

}  // namespace kvsession::testing

#endif  // KVSESSION_TESTS_RUNTIME_REFERENCE_FORWARD_H_
