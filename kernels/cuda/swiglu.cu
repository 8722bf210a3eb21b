// out = silu(gate) * up elementwise with the CPU SwiGlu's arithmetic: its
// exp (simd::ExpScalar: Cody-Waite reduction and a degree-5 polynomial, with
// fma where it uses fma), then g / (1 + e) * u, each op rounded once, so
// finite results are bitwise equal to the CPU op (the parity tests state
// 1e-6 relative; NaN payloads differ between x86 and the GPU). out may
// alias gate or up.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/check.h"
#include "kernels/cpu/simd.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

// simd::ExpScalar, operation for operation.
__device__ __forceinline__ float ExpLikeCpu(float x) {
  namespace s = ::kvsession::kernels::simd;
  // Local copies: the ternaries below would otherwise odr-use host constants.
  constexpr float kHi = s::kExpHi;
  constexpr float kLo = s::kExpLo;
  x = x < kHi ? x : kHi;  // NaN becomes kExpHi, as on the CPU
  x = x > kLo ? x : kLo;
  const float n = rintf(__fmul_rn(x, s::kLog2e));  // nearest, ties to even
  float r = __fmaf_rn(-n, s::kLn2Hi, x);
  r = __fmaf_rn(-n, s::kLn2Lo, r);
  const float z = __fmul_rn(r, r);
  float p = s::kExpP0;
  p = __fmaf_rn(p, r, s::kExpP1);
  p = __fmaf_rn(p, r, s::kExpP2);
  p = __fmaf_rn(p, r, s::kExpP3);
  p = __fmaf_rn(p, r, s::kExpP4);
  p = __fmaf_rn(p, r, s::kExpP5);
  float y = __fmaf_rn(p, z, r);
  y = __fadd_rn(y, 1.0f);
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127)
                        << 23;
  return __fmul_rn(y, __uint_as_float(bits));
}

__device__ __forceinline__ float SwiGluOne(float g, float u) {
  return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, ExpLikeCpu(-g))), u);
}

__global__ void SwiGluKernel4(const float4* gate, const float4* up, int64_t n4,
                              float4* out) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4;
       i += step) {
    const float4 g = gate[i];
    const float4 u = up[i];
    out[i] = make_float4(SwiGluOne(g.x, u.x), SwiGluOne(g.y, u.y),
                         SwiGluOne(g.z, u.z), SwiGluOne(g.w, u.w));
  }
}

__global__ void SwiGluKernel(const float* gate, const float* up, int64_t begin,
                             int64_t n, float* out) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = begin + blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
       i < n; i += step) {
    out[i] = SwiGluOne(gate[i], up[i]);
  }
}

int64_t Blocks(int64_t n) {
  return std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kMaxBlocks);
}

bool Aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

}  // namespace

void LaunchSwiGlu(const float* gate, const float* up, int64_t n, float* out,
                  cudaStream_t stream) {
  KVS_CHECK(n >= 0) << n;
  if (n == 0) return;
  int64_t done = 0;
  if (Aligned16(gate) && Aligned16(up) && Aligned16(out) && n >= 4) {
    const int64_t n4 = n / 4;
    SwiGluKernel4<<<Blocks(n4), kThreads, 0, stream>>>(
        reinterpret_cast<const float4*>(gate),
        reinterpret_cast<const float4*>(up), n4,
        reinterpret_cast<float4*>(out));
    KVS_CUDA_LAUNCH_CHECK();
    done = n4 * 4;
  }
  if (done < n) {
    SwiGluKernel<<<Blocks(n - done), kThreads, 0, stream>>>(gate, up, done, n,
                                                            out);
    KVS_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace kvsession::kernels::cuda
