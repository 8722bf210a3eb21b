// Hyper-parameters of a decoder, read from GGUF metadata; the family
// (runtime/arch/) adds what is its own.
#ifndef KVSESSION_RUNTIME_MODEL_CONFIG_H_
#define KVSESSION_RUNTIME_MODEL_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/op_params.h"

namespace kvsession::runtime {

class GgufFile;

struct ModelConfig {
  std::string architecture;  // general.architecture
  std::string name;          // general.name
  int32_t n_layers = 0;
  int32_t d_model = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;  // of K and V; q is n_heads * head_dim wide
  int32_t ffn_dim = 0;
  int32_t vocab_size = 0;
  int32_t context_length = 0;
  float rms_eps = 1e-5f;
  kernels::RopeParams rope;
  // Attention scale; 0: 1 / sqrt(head_dim).
  float attn_scale = 0.0f;
  // The embedding rows are multiplied by this (Gemma: sqrt(d_model)).
  float embed_scale = 1.0f;
  // Sliding-window attention (Gemma 3): a local layer attends to the last
  // `sliding_window` positions and rotates with rope_local. With
  // swa_period n > 0, layer l is local unless l % n == n - 1 (llama.cpp's
  // swa pattern: Gemma 3 has five local layers, then one global); with 0,
  // every layer is. sliding_window 0: no local layers.
  int32_t sliding_window = 0;
  int32_t swa_period = 0;
  kernels::RopeParams rope_local;

  bool IsLocalLayer(int32_t layer) const {
    return sliding_window > 0 &&
           (swa_period == 0 || layer % swa_period < swa_period - 1);
  }

  // Reads and validates the configuration ({arch}.block_count, ...).
  static absl::StatusOr<ModelConfig> FromGguf(const GgufFile& file);

  // KV bytes one token occupies across all layers (f16 K and V).
  int64_t KvBytesPerToken() const {
    return int64_t{n_layers} * 2 * n_kv_heads * head_dim * 2;
  }
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_MODEL_CONFIG_H_
