// Rotary position embedding in place, one CTA per token. The angles follow
// the CPU Rope's schedule exactly: theta_i = freq_scale * (pos * ts * ... * ts)
// with i sequential f32 products (no powf), ts = freq_base^(-2/rot_dim)
// computed on the host by the same expression as the CPU. cos and sin are
// taken in double and rounded once to f32: correctly rounded nearly always,
// independent of the device's f32 libm, while the CPU's cosf/sinf may be
// 1 ulp off, so a few elements differ by an ulp from the reference. The
// rotation is the CPU's unfused f32 sequence. Each token's result depends
// only on its position and its own x, never on the batch.
// LaunchRopeKvWrite runs Rope on q and k and KvWrite in one launch, with the
// same per-token bodies (token_ops.cuh), so its bits are theirs.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/token_ops.cuh"

namespace kvsession::kernels::cuda {
namespace {

// One CTA per token.
__global__ void __launch_bounds__(kTokenThreads)
    RopeKernel(float* __restrict__ x, int32_t n_heads,
               const int32_t* __restrict__ positions, int32_t head_dim,
               int32_t half, float theta_scale, float freq_scale, bool neox) {
  extern __shared__ float cs[];  // [half][cos, sin]
  const int64_t t = blockIdx.x;
  RopeAngles(positions[t], half, theta_scale, freq_scale, cs);
  __syncthreads();
  RopeToken(x + t * n_heads * head_dim, n_heads, head_dim, half, neox, cs);
}

// Rope of q and k, then KvWrite of k and v, for one token per CTA: the
// angles are computed once, and the rotated k reaches the cache in the same
// launch. The barrier makes the rotated k (global memory, written by other
// threads of the CTA) visible to the threads that store it.
__global__ void __launch_bounds__(kTokenThreads)
    RopeKvWriteKernel(float* __restrict__ q, int32_t n_heads, float* k,
                      const float* __restrict__ v, KvCacheView kv,
                      int32_t layer, const int32_t* __restrict__ positions,
                      const int32_t* const* __restrict__ block_tables,
                      int32_t half, float theta_scale, float freq_scale,
                      bool neox) {
  extern __shared__ float cs[];
  const int64_t t = blockIdx.x;
  const int32_t hd = kv.head_dim;
  const int64_t kv_row = int64_t{kv.n_kv_heads} * hd;
  RopeAngles(positions[t], half, theta_scale, freq_scale, cs);
  __syncthreads();
  RopeToken(q + t * n_heads * hd, n_heads, hd, half, neox, cs);
  RopeToken(k + t * kv_row, kv.n_kv_heads, hd, half, neox, cs);
  __syncthreads();
  KvWriteToken(kv, layer, positions[t], block_tables[t], k + t * kv_row,
               v + t * kv_row);
}

// The launch parameters both kernels share.
struct RopeLaunch {
  int32_t half;
  float theta_scale;
  size_t smem;
};

RopeLaunch Prepare(const RopeParams& params) {
  const int32_t hd = params.head_dim;
  const int32_t rot = params.rot_dim;
  KVS_CHECK(rot > 0 && rot % 2 == 0 && rot <= hd)
      << "rot_dim " << rot << " head_dim " << hd;
  RopeLaunch l;
  l.half = rot / 2;
  // Same expression (and host libm) as the CPU Rope.
  l.theta_scale = std::pow(params.freq_base, -2.0f / static_cast<float>(rot));
  l.smem = 2 * static_cast<size_t>(l.half) * sizeof(float);
  return l;
}

}  // namespace

void LaunchRope(float* x, int64_t n_tokens, int32_t n_heads,
                const int32_t* positions, const RopeParams& params,
                cudaStream_t stream) {
  const RopeLaunch l = Prepare(params);
  KVS_CHECK(n_tokens >= 0 && n_tokens <= INT32_MAX && n_heads >= 0)
      << "n_tokens " << n_tokens << " n_heads " << n_heads;
  if (n_tokens == 0 || n_heads == 0) return;
  RopeKernel<<<static_cast<unsigned>(n_tokens), kTokenThreads, l.smem,
               stream>>>(x, n_heads, positions, params.head_dim, l.half,
                         l.theta_scale, params.freq_scale,
                         params.mode == RopeMode::kNeox);
  KVS_CUDA_LAUNCH_CHECK();
}

void LaunchRopeKvWrite(float* q, int32_t n_heads, float* k, const float* v,
                       const RopeParams& params, const KvCacheView& kv,
                       int32_t layer, const TokenPlacement& placement,
                       cudaStream_t stream) {
  const RopeLaunch l = Prepare(params);
  KVS_CHECK(params.head_dim == kv.head_dim)
      << "rope head_dim " << params.head_dim << " KV head_dim " << kv.head_dim;
  KVS_CHECK(layer >= 0 && layer < kv.n_layers) << "layer " << layer;
  KVS_CHECK(kv.block_size > 0 && kv.n_kv_heads > 0 && n_heads > 0)
      << "block_size " << kv.block_size << " n_kv_heads " << kv.n_kv_heads
      << " n_heads " << n_heads;
  KVS_CHECK(placement.n_tokens >= 0) << "n_tokens " << placement.n_tokens;
  if (placement.n_tokens == 0) return;
  RopeKvWriteKernel<<<static_cast<unsigned>(placement.n_tokens),
                      kTokenThreads, l.smem, stream>>>(
      q, n_heads, k, v, kv, layer, placement.positions, placement.block_tables,
      l.half, l.theta_scale, params.freq_scale,
      params.mode == RopeMode::kNeox);
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
