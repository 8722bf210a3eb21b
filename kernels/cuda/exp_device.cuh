// The CPU's exp (simd::ExpScalar: Cody-Waite reduction and a degree-5
// polynomial) on the device, so that the gated activations (SwiGlu, GeGlu)
// give the CPU's bits.
#ifndef KVSESSION_KERNELS_CUDA_EXP_DEVICE_CUH_
#define KVSESSION_KERNELS_CUDA_EXP_DEVICE_CUH_

#include <cstdint>

#include "kernels/cpu/simd.h"

namespace kvsession::kernels::cuda {

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

}  // namespace kvsession::kernels::cuda

#endif  // KVSESSION_KERNELS_CUDA_EXP_DEVICE_CUH_
