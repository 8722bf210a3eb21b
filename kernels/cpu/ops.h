// The CPU ops, one per file pair in this folder. Every op is deterministic and
// batch invariant: the value of one output element depends only on its own
// inputs, never on n_tokens, on the other tokens of the batch or on n_threads
// (threads split work across rows/tokens/heads, never across a reduction).
#ifndef KVSESSION_KERNELS_CPU_OPS_H_
#define KVSESSION_KERNELS_CPU_OPS_H_

#include <cstdint>
#include <span>

#include "kernels/cpu/exec.h"
#include "kernels/host_device.h"
#include "kernels/kv_cache_view.h"
#include "kernels/op_params.h"

namespace kvsession::kernels {

// dequantize.cc: n elements (a multiple of the block size) of any weight type
// to f32.
void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n);

// quantize.cc: f32 to F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1,
// Q8_K (ggml's reference rounding) and Q4_K, Q5_K, Q6_K (a routine of our
// own: every element within half a step). Used for activations and to write
// test models.
bool CanQuantize(GgmlType type);
void QuantizeRow(GgmlType type, const float* src, void* dst, int64_t n);

// matmul.cc: out[t * w.rows + r] = dot(row r of w, x + t * w.cols) for
// t < n_tokens. Quantized weights meet activations quantized per token with
// the same routine in prefill and decode (Q8_1 for Q4_1/Q5_1, Q8_0 for
// Q4_0/Q5_0/Q8_0, Q8_K for Q4_K/Q5_K/Q6_K in matmul_k.cc); other types are
// dequantized and dotted in f32.
void MatMul(const WeightView& w, const float* x, int64_t n_tokens, float* out,
            const CpuExec& exec);

// rms_norm.cc: out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight.
void RmsNorm(const float* x, const float* weight, int64_t n_rows, int64_t dim,
             float eps, float* out, const CpuExec& exec);

// rope.cc: rotates x [n_tokens][n_heads * head_dim] in place; token t is at
// positions[t].
void Rope(float* x, int64_t n_tokens, int32_t n_heads, const int32_t* positions,
          const RopeParams& params, const CpuExec& exec);

// swiglu.cc: out = silu(gate) * up, elementwise.
void SwiGlu(const float* gate, const float* up, int64_t n, float* out,
            const CpuExec& exec);

// geglu.cc: out = gelu(gate) * up elementwise, with GELU's tanh form
// (Gemma's gelu_pytorch_tanh, ggml_gelu) written as the identical
// x * sigmoid(2 * sqrt(2 / pi) * (x + 0.044715 x^3)), so that it shares
// SwiGlu's exp: g / (1 + exp(-(g * (kA + kB * g * g)))) * u, each op
// rounded once. out may alias gate or up.
inline constexpr float kGeluA = 1.5957691216057308f;     // 2 * sqrt(2 / pi)
inline constexpr float kGeluB = 0.07135481627260025f;  // kGeluA * 0.044715
void GeGlu(const float* gate, const float* up, int64_t n, float* out,
           const CpuExec& exec);

// scale.cc: out = x * s, elementwise (out may alias x).
void Scale(const float* x, float s, int64_t n, float* out,
           const CpuExec& exec);

// add.cc: out = a + b, elementwise (out may alias a or b).
void Add(const float* a, const float* b, int64_t n, float* out,
         const CpuExec& exec);

// add_bias.cc: out[r] = x[r] + bias for n_rows rows of dim floats (a
// projection's bias; out may alias x).
void AddBias(const float* x, const float* bias, int64_t n_rows, int64_t dim,
             float* out, const CpuExec& exec);

// split_columns.cc: row r of src holds widths[0] + ... + widths[n-1]
// floats; segment i goes to dsts[i] + r * widths[i] (a plain copy). The
// outputs of weights run as one GEMM (Q, K and V) reach their buffers so.
inline constexpr int kMaxSplitColumns = 4;
void SplitColumns(const float* src, int64_t n_rows,
                  std::span<const int64_t> widths, std::span<float* const> dsts,
                  const CpuExec& exec);

// embed.cc: out[t] = dequantized row tokens[t] of table.
void Embed(const WeightView& table, const int32_t* tokens, int64_t n_tokens,
           float* out, const CpuExec& exec);

// kv_write.cc: stores k and v ([n_tokens][n_kv_heads * head_dim], f32) as f16
// into the slots of each token's position in layer `layer`.
void KvWrite(const KvCacheView& kv, int32_t layer,
             const TokenPlacement& placement, const float* k, const float* v,
             const CpuExec& exec);

// attention.cc: causal attention of each query token over positions
// WindowStart(p, params.window)..p (p = positions[t]) of its own sequence,
// read through the block table; blocks before the window are never read.
// q and out are [n_tokens][n_heads * head_dim]. Query head h reads KV head
// h / (n_heads / n_kv_heads).
void Attention(const KvCacheView& kv, int32_t layer,
               const TokenPlacement& placement, const float* q,
               const AttentionParams& params, float* out, const CpuExec& exec);

// fill_random.cc: dst[i] = u(seed, i) * scale stored as F32, F16 or BF16,
// where u in [-1, 1) comes from a counter-based hash (splitmix64 of
// seed + (i + 1) * golden ratio, top 24 bits): the same values on every
// backend and thread count. Random-weight benchmark models use it.
void FillRandom(GgmlType type, void* dst, int64_t n, uint64_t seed,
                float scale, const CpuExec& exec);
// The hash behind FillRandom, in [-1, 1) (exact in f32).
KVS_HOST_DEVICE inline float RandomUnit(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

// sample.cc: picks one token per row of logits [n_rows][vocab].
//  - temperature <= 0: argmax, the lowest id on ties (greedy).
//  - otherwise z = logit / temperature over the candidates: the top_k
//    largest z (1 <= top_k <= kMaxSampleTopK), ordered by z descending then
//    id ascending; p = exp(z - z_max) / sum over the candidates (the sum in
//    that order); with top_p < 1 only the shortest prefix of that order
//    whose cumulative p reaches top_p stays; then the first candidate (same
//    order) whose running sum of p exceeds u * (sum of kept p) is chosen,
//    the last kept one if none does. u in [0, 1) comes from the caller's
//    seeded generator, so sampling is reproducible.
// top_k == 0 (the whole vocabulary) is sampled on the host by
// runtime::Sampler; the device op serves greedy and top-k rows.
void SampleTokens(const float* logits, int32_t n_rows, int32_t vocab,
                  const SampleRow* rows, int32_t* out, const CpuExec& exec);

}  // namespace kvsession::kernels

#endif  // KVSESSION_KERNELS_CPU_OPS_H_
