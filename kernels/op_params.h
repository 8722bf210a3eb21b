// Parameters of the backend ops that take more than buffers and sizes. Every
// backend (kernels/cpu, kernels/cuda) and every model family shares them.
#ifndef KVSESSION_KERNELS_OP_PARAMS_H_
#define KVSESSION_KERNELS_OP_PARAMS_H_

#include <cstdint>

#include "kernels/host_device.h"

namespace kvsession::kernels {

enum class RopeMode {
  kNormal,  // rotate adjacent pairs (x[2i], x[2i+1]): GGUF llama
  kNeox,    // rotate (x[i], x[i + rot_dim/2]): Qwen2, Qwen3, GPT-NeoX
};
struct RopeParams {
  int32_t head_dim = 64;
  int32_t rot_dim = 64;  // leading dims of each head that rotate
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;  // linear position scaling (1 = none)
  RopeMode mode = RopeMode::kNormal;
};

struct AttentionParams {
  int32_t n_heads = 0;  // query heads; n_heads % kv.n_kv_heads == 0 (GQA)
  float scale = 0.0f;   // usually 1/sqrt(head_dim)
  // > 0: sliding-window attention, a token at position p attends to the
  // positions (p - window, p] only (llama.cpp's standard SWA mask); the
  // blocks of earlier positions are never read and may be freed.
  int32_t window = 0;
};

// First position a token at `pos` attends to.
KVS_HOST_DEVICE constexpr int32_t WindowStart(int32_t pos, int32_t window) {
  return window > 0 && pos >= window ? pos - window + 1 : 0;
}

// How SampleTokens picks a row's token (kernels/cpu/ops.h has the rule).
inline constexpr int32_t kMaxSampleTopK = 1024;
struct SampleRow {
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float u = 0.0f;
};

}  // namespace kvsession::kernels

#endif  // KVSESSION_KERNELS_OP_PARAMS_H_
