// Per-token device bodies shared by the RoPE and KV write kernels and by
// the kernel that fuses them (rope.cu), so that the fused kernel's
// arithmetic is the separate kernels' by construction. Each runs on one
// CTA of kTokenThreads threads for token t.
#ifndef KVSESSION_KERNELS_CUDA_TOKEN_OPS_CUH_
#define KVSESSION_KERNELS_CUDA_TOKEN_OPS_CUH_

#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/kv_cache_view.h"

namespace kvsession::kernels::cuda {

inline constexpr int kTokenThreads = 256;
// Loads each thread issues before using any: one at a time, a token's
// elements took one serial round trip per element group (16 for the 2048
// RoPE pairs of 32 heads).
inline constexpr int kTokenBatch = 8;

// cs[2i], cs[2i + 1] = cos, sin of pair i's angle at `position`, i < half:
// theta_i = freq_scale * (pos * ts * ... * ts) with i sequential f32
// products, as the CPU Rope; cos and sin in double, rounded once.
__device__ __forceinline__ void RopeAngles(int32_t position, int32_t half,
                                           float theta_scale, float freq_scale,
                                           float* cs) {
  const float pos = static_cast<float>(position);
  for (int32_t i = threadIdx.x; i < half; i += blockDim.x) {
    float theta = pos;
    for (int32_t k = 0; k < i; ++k) theta = __fmul_rn(theta, theta_scale);
    const double th = static_cast<double>(__fmul_rn(freq_scale, theta));
    double s, c;
    sincos(th, &s, &c);
    cs[2 * i] = __double2float_rn(c);
    cs[2 * i + 1] = __double2float_rn(s);
  }
}

// Rotates one token's n_heads heads of x in place with the angles cs:
// kNormal pairs (2i, 2i+1), kNeox pairs (i, i + half); the CPU's unfused
// f32 sequence.
__device__ __forceinline__ void RopeToken(float* xt, int32_t n_heads,
                                          int32_t head_dim, int32_t half,
                                          bool neox, const float* cs) {
  const int32_t stride = neox ? 1 : 2;
  const int32_t other = neox ? half : 1;
  const int32_t n_pairs = n_heads * half;
  for (int32_t p0 = threadIdx.x; p0 < n_pairs;
       p0 += kTokenThreads * kTokenBatch) {
    float x0[kTokenBatch] = {}, x1[kTokenBatch] = {};
#pragma unroll
    for (int j = 0; j < kTokenBatch; ++j) {
      const int32_t p = p0 + j * kTokenThreads;
      if (p >= n_pairs) break;
      const float* xh = xt + static_cast<int64_t>(p / half) * head_dim;
      const int32_t i = p % half;
      x0[j] = xh[i * stride];
      x1[j] = xh[i * stride + other];
    }
#pragma unroll
    for (int j = 0; j < kTokenBatch; ++j) {
      const int32_t p = p0 + j * kTokenThreads;
      if (p >= n_pairs) break;
      float* xh = xt + static_cast<int64_t>(p / half) * head_dim;
      const int32_t i = p % half;
      const float c = cs[2 * i];
      const float s = cs[2 * i + 1];
      xh[i * stride] = __fsub_rn(__fmul_rn(x0[j], c), __fmul_rn(x1[j], s));
      xh[i * stride + other] =
          __fadd_rn(__fmul_rn(x0[j], s), __fmul_rn(x1[j], c));
    }
  }
}

// Stores token t's K and V rows (f32, [n_kv_heads * head_dim] each) as f16
// (round to nearest even, as the CPU FloatToHalf) into its slot; K then V,
// consecutive threads on consecutive elements.
__device__ __forceinline__ void KvWriteToken(
    const KvCacheView& kv, int32_t layer, int32_t position,
    const int32_t* table, const float* kt, const float* vt) {
  const int32_t block = table[position / kv.block_size];
  const int32_t slot = position % kv.block_size;
  const int32_t hd = kv.head_dim;
  const int32_t row = kv.n_kv_heads * hd;
  for (int32_t e0 = threadIdx.x; e0 < 2 * row;
       e0 += kTokenThreads * kTokenBatch) {
    float x[kTokenBatch] = {};
#pragma unroll
    for (int j = 0; j < kTokenBatch; ++j) {
      const int32_t e = e0 + j * kTokenThreads;
      if (e >= 2 * row) break;
      x[j] = e < row ? kt[e] : vt[e - row];
    }
#pragma unroll
    for (int j = 0; j < kTokenBatch; ++j) {
      const int32_t e = e0 + j * kTokenThreads;
      if (e >= 2 * row) break;
      const int32_t which = e / row;  // 0: K, 1: V
      const int32_t r = e - which * row;
      const int32_t h = r / hd;
      const int32_t d = r - h * hd;
      kv.base[kv.Offset(block, layer, which, h, slot) + d] =
          __half_as_ushort(__float2half_rn(x[j]));
    }
  }
}

}  // namespace kvsession::kernels::cuda

#endif  // KVSESSION_KERNELS_CUDA_TOKEN_OPS_CUH_
