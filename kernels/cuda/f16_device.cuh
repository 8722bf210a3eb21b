// Bit-exact device copies of kernels/f16.cc's conversions (their portable
// paths, which F16C matches), for the ops that promise bitwise parity with
// the CPU: NaN payloads and subnormals come out the same.
#ifndef KVSESSION_KERNELS_CUDA_F16_DEVICE_CUH_
#define KVSESSION_KERNELS_CUDA_F16_DEVICE_CUH_

#include <cstdint>

namespace kvsession::kernels::cuda {

// HalfToFloat of kernels/f16.cc (its portable path, which F16C matches).
__device__ __forceinline__ float F16BitsToF32(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    const float mag = __fmul_rn(static_cast<float>(mant), 0x1p-24f);
    return __uint_as_float(sign | __float_as_uint(mag));
  }
  if (exp == 0x1F) {
    return __uint_as_float(sign | 0x7F800000u | (mant << 13) |
                           (mant != 0 ? 0x00400000u : 0u));
  }
  return __uint_as_float(sign | ((exp + 112) << 23) | (mant << 13));
}

// internal::FloatToHalfPortable of kernels/f16.cc.
__device__ __forceinline__ uint16_t F32ToF16Bits(float f) {
  const uint32_t u = __float_as_uint(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) {
    return static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  }
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);
  if (a < 0x38800000u) {
    const uint32_t r =
        __float_as_uint(__fadd_rn(__uint_as_float(a), 0.5f)) - 0x3F000000u;
    return static_cast<uint16_t>(sign | r);
  }
  const uint32_t odd = (a >> 13) & 1u;
  a += 0xC8000FFFu + odd;
  return static_cast<uint16_t>(sign | (a >> 13));
}

// FloatToBf16 of kernels/f16.cc.
__device__ __forceinline__ uint16_t F32ToBf16Bits(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
    return static_cast<uint16_t>((u >> 16) | 0x40u);
  }
  return static_cast<uint16_t>((u + (0x7FFFu + ((u >> 16) & 1u))) >> 16);
}

// Block fields are only 2-byte aligned (18-, 22-, 34-byte blocks).

}  // namespace kvsession::kernels::cuda

#endif  // KVSESSION_KERNELS_CUDA_F16_DEVICE_CUH_
