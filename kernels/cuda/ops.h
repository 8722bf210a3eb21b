// The CUDA ops, one per .cu file in this folder. Each mirrors the CPU op of
// the same name in kernels/cpu/ops.h (its reference): same arguments, with
// the CpuExec replaced by the stream the op is enqueued on. Every pointer is
// device memory, including the arrays inside views (positions, block tables,
// token ids). Like the CPU ops, every op is batch invariant: one output
// element's value depends only on its own inputs, never on n_tokens or the
// rest of the batch (DESIGN.md invariant 5), so no reduction is split or
// ordered by the batch shape.
#ifndef KVSESSION_KERNELS_CUDA_OPS_H_
#define KVSESSION_KERNELS_CUDA_OPS_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/cpu/ops.h"
#include "kernels/kv_cache_view.h"

namespace kvsession::kernels::cuda {

// embed.cu: out[t] = row tokens[t] of table (F32, F16 or BF16) as f32.
void LaunchEmbed(const WeightView& table, const int32_t* tokens,
                 int64_t n_tokens, float* out, cudaStream_t stream);

// rms_norm.cu: out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight.
void LaunchRmsNorm(const float* x, const float* weight, int64_t n_rows,
                   int64_t dim, float eps, float* out, cudaStream_t stream);

// rms_norm.cu: Add, RmsNorm and ConvertRows in one launch, for a GEMM
// input: if residual is not null, x += residual (in place, as LaunchAdd);
// then row r of RmsNorm(x), rounded to `to` (F16 or BF16), goes to
// out + r * dim elements; rows n_rows .. n_rows_padded - 1 of out are
// zeroed. Bitwise the three ops' results.
void LaunchAddRmsNormRounded(float* x, const float* residual,
                             const float* weight, int64_t n_rows,
                             int64_t n_rows_padded, int64_t dim, float eps,
                             GgmlType to, void* out, cudaStream_t stream);

// rope.cu: rotates x [n_tokens][n_heads * head_dim] in place.
void LaunchRope(float* x, int64_t n_tokens, int32_t n_heads,
                const int32_t* positions, const RopeParams& params,
                cudaStream_t stream);

// rope.cu: Rope(q, n_heads) and Rope(k, kv.n_kv_heads) at the placement's
// positions, then KvWrite(kv, layer, placement, k, v), in one launch;
// bitwise the three ops' results (k is rotated in place too).
void LaunchRopeKvWrite(float* q, int32_t n_heads, float* k, const float* v,
                       const RopeParams& params, const KvCacheView& kv,
                       int32_t layer, const TokenPlacement& placement,
                       cudaStream_t stream);

// swiglu.cu: out = silu(gate) * up.
void LaunchSwiGlu(const float* gate, const float* up, int64_t n, float* out,
                  cudaStream_t stream);

// geglu.cu: out = gelu(gate) * up (tanh GELU, the CPU's operations).
void LaunchGeGlu(const float* gate, const float* up, int64_t n, float* out,
                 cudaStream_t stream);

// scale.cu: out = x * s.
void LaunchScale(const float* x, float s, int64_t n, float* out,
                 cudaStream_t stream);

// swiglu.cu: SwiGlu of [n_rows][dim] gate and up, rounded to `to` into
// out [n_rows_padded][dim] (padding rows zeroed): SwiGlu then ConvertRows,
// bitwise, in one launch.
void LaunchSwiGluRounded(const float* gate, const float* up, int64_t n_rows,
                         int64_t n_rows_padded, int64_t dim, GgmlType to,
                         void* out, cudaStream_t stream);

// add.cu: out = a + b (out may alias a or b).
void LaunchAdd(const float* a, const float* b, int64_t n, float* out,
               cudaStream_t stream);

// add_bias.cu: out[r] = x[r] + bias for n_rows rows of dim floats.
void LaunchAddBias(const float* x, const float* bias, int64_t n_rows,
                   int64_t dim, float* out, cudaStream_t stream);

// gather_rows.cu: dst[i] = src[rows[i]], rows of `dim` floats.
void LaunchGatherRows(const float* src, const int32_t* rows, int64_t n_rows,
                      int64_t dim, float* dst, cudaStream_t stream);

// split_columns.cu: row r of src (widths summed) to its segments, segment
// i at dsts[i] + r * widths[i]; at most kMaxSplitColumns outputs.
void LaunchSplitColumns(const float* src, int64_t n_rows,
                        std::span<const int64_t> widths,
                        std::span<float* const> dsts, cudaStream_t stream);

// convert.cu: f32 rows to F16 or BF16 (round to nearest even, as
// QuantizeRow), for GEMM inputs: row r of `n_cols` floats at x + r * n_cols
// goes to out + r * ld_out elements. Rows n_rows .. n_rows_padded - 1 of out
// are zeroed.
void LaunchConvertRows(const float* x, int64_t n_rows, int64_t n_rows_padded,
                       int64_t n_cols, int64_t ld_out, GgmlType to, void* out,
                       cudaStream_t stream);

// dequantize.cu: n elements of a weight type (F32, F16, BF16, Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) to F16 or BF16, as DequantizeRow followed
// by round-to-nearest-even: bitwise equal to that reference. n is a multiple of
// the type's block size.
bool CanDequantize(GgmlType from);
void LaunchDequantize(GgmlType from, const void* src, int64_t n, GgmlType to,
                      void* dst, cudaStream_t stream);

// fill_random.cu: dst[i] = (uniform in [-1, 1) from a counter-based hash of
// (seed, i)) * scale, stored as F32, F16 or BF16; bitwise equal to the CPU
// FillRandom. Random-weight models for benchmarks are made on the device.
void LaunchFillRandom(GgmlType type, void* dst, int64_t n, uint64_t seed,
                      float scale, cudaStream_t stream);

// kv_write.cu: stores k and v ([n_tokens][n_kv_heads * head_dim], f32) as
// f16 into each token's slot of layer `layer` (bitwise equal to the CPU op).
void LaunchKvWrite(const KvCacheView& kv, int32_t layer,
                   const TokenPlacement& placement, const float* k,
                   const float* v, cudaStream_t stream);

// attention.cu: causal attention over the paged KV cache, the CPU
// Attention's contract. Split-K over positions (flash-decoding) so that one
// long sequence still fills the GPU: partition j of every token covers the
// absolute positions [j * partition, (j + 1) * partition) whatever the
// batch, and partitions are merged in an order fixed by the position, so a
// token's result is the same in prefill and in decode for one `partition`
// (64 or 256; the block size must divide it). `max_position` bounds
// positions[] (it sizes the grid only); `workspace` holds
// AttentionWorkspaceFloats() floats.
inline constexpr int32_t kDefaultAttentionPartition = 64;
bool IsAttentionPartition(int32_t partition);
int64_t AttentionWorkspaceFloats(int32_t n_tokens, int32_t n_heads,
                                 int32_t head_dim, int32_t partition,
                                 int32_t max_position);
void LaunchAttention(const KvCacheView& kv, int32_t layer,
                     const TokenPlacement& placement, const float* q,
                     const AttentionParams& params, int32_t partition,
                     int32_t max_position, float* workspace, float* out,
                     cudaStream_t stream);

// sample.cu: one token per logits row, the CPU SampleTokens' contract.
// `rows` (device) holds n_rows SampleRow; `workspace` holds
// SampleWorkspaceBytes() bytes.
size_t SampleWorkspaceBytes(int32_t n_rows, int32_t vocab);
void LaunchSampleTokens(const float* logits, int32_t n_rows, int32_t vocab,
                        const SampleRow* rows, void* workspace, int32_t* out,
                        cudaStream_t stream);

}  // namespace kvsession::kernels::cuda

#endif  // KVSESSION_KERNELS_CUDA_OPS_H_
