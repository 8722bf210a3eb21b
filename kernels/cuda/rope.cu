// Rotary position embedding in place, one CTA per token. The angles follow
// the CPU Rope's schedule exactly: theta_i = freq_scale * (pos * ts * ... * ts)
// with i sequential f32 products (no powf), ts = freq_base^(-2/rot_dim)
// computed on the host by the same expression as the CPU. cos and sin are
// taken in double and rounded once to f32: correctly rounded nearly always,
// independent of the device's f32 libm, while the CPU's cosf/sinf may be
// 1 ulp off, so a few elements differ by an ulp from the reference. The
// rotation is the CPU's unfused f32 sequence. Each token's result depends
// only on its position and its own x, never on the batch.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBatch = 8;  // pairs in flight per thread

__global__ void __launch_bounds__(kThreads)
    RopeKernel(float* __restrict__ x, int32_t n_heads,
               const int32_t* __restrict__ positions, int32_t head_dim,
               int32_t half, float theta_scale, float freq_scale, bool neox) {
  extern __shared__ float cs[];  // [half][cos, sin]
  const int64_t t = blockIdx.x;
  const float pos = static_cast<float>(positions[t]);
  for (int32_t i = threadIdx.x; i < half; i += blockDim.x) {
    // The CPU multiplies theta by theta_scale once per pair index.
    float theta = pos;
    for (int32_t k = 0; k < i; ++k) theta = __fmul_rn(theta, theta_scale);
    const double th = static_cast<double>(__fmul_rn(freq_scale, theta));
    double s, c;
    sincos(th, &s, &c);
    cs[2 * i] = __double2float_rn(c);
    cs[2 * i + 1] = __double2float_rn(s);
  }
  __syncthreads();
  // kNormal pairs (2i, 2i+1); kNeox pairs (i, i + half).
  const int32_t stride = neox ? 1 : 2;
  const int32_t other = neox ? half : 1;
  float* xt = x + t * n_heads * head_dim;
  const int32_t n_pairs = n_heads * half;
  // kBatch pairs per thread are loaded before any is rotated: one pair at a
  // time, the 2048 pairs of 32 heads took 16 serial round trips per thread.
  for (int32_t p0 = threadIdx.x; p0 < n_pairs; p0 += kThreads * kBatch) {
    float x0[kBatch] = {}, x1[kBatch] = {};
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int32_t p = p0 + j * kThreads;
      if (p >= n_pairs) break;
      const float* xh = xt + static_cast<int64_t>(p / half) * head_dim;
      const int32_t i = p % half;
      x0[j] = xh[i * stride];
      x1[j] = xh[i * stride + other];
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int32_t p = p0 + j * kThreads;
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

}  // namespace

void LaunchRope(float* x, int64_t n_tokens, int32_t n_heads,
                const int32_t* positions, const RopeParams& params,
                cudaStream_t stream) {
  const int32_t hd = params.head_dim;
  const int32_t rot = params.rot_dim;
  KVS_CHECK(rot > 0 && rot % 2 == 0 && rot <= hd)
      << "rot_dim " << rot << " head_dim " << hd;
  KVS_CHECK(n_tokens >= 0 && n_tokens <= INT32_MAX && n_heads >= 0)
      << "n_tokens " << n_tokens << " n_heads " << n_heads;
  if (n_tokens == 0 || n_heads == 0) return;
  const int32_t half = rot / 2;
  // Same expression (and host libm) as the CPU Rope.
  const float theta_scale =
      std::pow(params.freq_base, -2.0f / static_cast<float>(rot));
  const size_t smem = 2 * static_cast<size_t>(half) * sizeof(float);
  RopeKernel<<<static_cast<unsigned>(n_tokens), kThreads, smem, stream>>>(
      x, n_heads, positions, hd, half, theta_scale, params.freq_scale,
      params.mode == RopeMode::kNeox);
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
