// KvWrite on the device: each token's K and V rows, f32 -> f16 (round to
// nearest even, as the CPU FloatToHalf), into its slot of the paged arena.
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kKvWriteThreads = 256;
constexpr int kBatch = 8;  // elements in flight per thread

// One CTA per token; threads walk the token's 2 * n_kv_heads * head_dim
// elements (K then V) with consecutive threads on consecutive head_dim
// elements, so loads and stores are coalesced.
__global__ void KvWriteKernel(KvCacheView kv, int32_t layer,
                              const int32_t* __restrict__ positions,
                              const int32_t* const* __restrict__ block_tables,
                              const float* __restrict__ k,
                              const float* __restrict__ v) {
  const int64_t t = blockIdx.x;
  const int32_t pos = positions[t];
  const int32_t block = block_tables[t][pos / kv.block_size];
  const int32_t slot = pos % kv.block_size;
  const int32_t hd = kv.head_dim;
  const int32_t row = kv.n_kv_heads * hd;
  // kBatch elements per thread are loaded before any is stored: one at a
  // time, the 2048 of an 8-head, head_dim-128 token took 8 serial round
  // trips per thread.
  for (int32_t e0 = threadIdx.x; e0 < 2 * row;
       e0 += kKvWriteThreads * kBatch) {
    float x[kBatch] = {};
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int32_t e = e0 + j * kKvWriteThreads;
      if (e >= 2 * row) break;
      x[j] = e < row ? k[t * row + e] : v[t * row + e - row];
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int32_t e = e0 + j * kKvWriteThreads;
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

}  // namespace

void LaunchKvWrite(const KvCacheView& kv, int32_t layer,
                   const TokenPlacement& placement, const float* k,
                   const float* v, cudaStream_t stream) {
  KVS_CHECK(layer >= 0 && layer < kv.n_layers) << "layer " << layer;
  KVS_CHECK(kv.block_size > 0 && kv.n_kv_heads > 0 && kv.head_dim > 0)
      << "block_size " << kv.block_size << " n_kv_heads " << kv.n_kv_heads
      << " head_dim " << kv.head_dim;
  KVS_CHECK(placement.n_tokens >= 0) << "n_tokens " << placement.n_tokens;
  if (placement.n_tokens == 0) return;
  KvWriteKernel<<<placement.n_tokens, kKvWriteThreads, 0, stream>>>(
      kv, layer, placement.positions, placement.block_tables, k, v);
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
