// KvWrite on the device: each token's K and V rows, f32 -> f16 (round to
// nearest even, as the CPU FloatToHalf), into its slot of the paged arena.
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/token_ops.cuh"

namespace kvsession::kernels::cuda {
namespace {

// One CTA per token (token_ops.cuh).
__global__ void __launch_bounds__(kTokenThreads)
    KvWriteKernel(KvCacheView kv, int32_t layer,
                  const int32_t* __restrict__ positions,
                  const int32_t* const* __restrict__ block_tables,
                  const float* __restrict__ k, const float* __restrict__ v) {
  const int64_t t = blockIdx.x;
  const int64_t row = int64_t{kv.n_kv_heads} * kv.head_dim;
  KvWriteToken(kv, layer, positions[t], block_tables[t], k + t * row,
               v + t * row);
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
  KvWriteKernel<<<placement.n_tokens, kTokenThreads, 0, stream>>>(
      kv, layer, placement.positions, placement.block_tables, k, v);
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
