// A tiny random-weight GGUF of a registered family (llama, qwen2, qwen3,
// gemma3) that tests write themselves: the real
// quantized code paths (Q4_1 matrices, Q8_0 tied embeddings), a byte-level
// BPE vocab with ChatML control tokens and a ChatML template, in milliseconds.
#ifndef KVSESSION_TESTS_RUNTIME_TINY_MODEL_H_
#define KVSESSION_TESTS_RUNTIME_TINY_MODEL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/ggml_type.h"

namespace kvsession::testing {

struct TinyModelOptions {
  std::string architecture = "llama";  // qwen2 adds Q/K/V biases, qwen3
                                       // q/k norms and key_length, gemma3
                                       // those and post-norms
  int32_t n_layers = 2;
  int32_t d_model = 64;
  int32_t n_heads = 4;
  int32_t n_kv_heads = 2;
  int32_t ffn_dim = 128;
  int32_t head_dim = 0;  // 0: d_model / n_heads (qwen3 writes key_length)
  int32_t context_length = 1024;
  int32_t sliding_window = 16;  // gemma3's attention.sliding_window
  float rope_base = 10000.0f;
  kernels::GgmlType matrix_type = kernels::GgmlType::kQ4_1;
  kernels::GgmlType embedding_type = kernels::GgmlType::kQ8_0;
  bool tied_output = true;
  uint32_t seed = 1;
};

// Writes the model to `path`.
absl::Status WriteTinyModel(const TinyModelOptions& options,
                            const std::string& path);

// Path of the default tiny model of `architecture`, written once per test
// process into a temporary folder.
const std::string& TinyModelPath(const std::string& architecture = "llama");

// The same with d_model 256 and head_dim 64 (Qwen3: 128; Gemma 3: 256 on
// one KV head, as 270M), head sizes the CUDA attention serves.
const std::string& WideTinyModelPath(const std::string& architecture);

// The families every exactness suite runs over. The gemma3 model has six
// layers (five sliding-window layers of 16 positions, then a global one).
inline const std::string kTinyFamilies[] = {"llama", "qwen2", "qwen3",
                                            "gemma3"};

// The vocab: ids 0..2 are <|endoftext|>, <|im_start|>, <|im_end|>; then the
// 256 byte tokens; then merged tokens.
inline constexpr int32_t kTinyEndOfText = 0;
inline constexpr int32_t kTinyImStart = 1;
inline constexpr int32_t kTinyImEnd = 2;

}  // namespace kvsession::testing

#endif  // KVSESSION_TESTS_RUNTIME_TINY_MODEL_H_
