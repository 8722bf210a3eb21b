// dst[i] = RandomUnit(seed, i) * scale as F32, F16 or BF16, bitwise equal to
// the CPU FillRandom: the hash is integer arithmetic, its conversion to
// [-1, 1) is exact in f32, the multiply by scale is one rounded product, and
// the 16-bit conversions are the bit manipulations of kernels/f16.cc. One
// thread per element (64-bit index; n may exceed 2^31).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // grid-stride beyond this

// kernels::RandomUnit (kernels/cpu/ops.h), a host function there.
__device__ __forceinline__ float RandomUnitDevice(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  // Both steps are exact (24-bit integer, power-of-two scale, then a
  // difference representable in f32), so no contraction can change them.
  return __fsub_rn(__fmul_rn(static_cast<float>(z >> 40), 2.0f / 16777216.0f),
                   1.0f);
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

template <GgmlType kType>
__global__ void FillRandomKernel(void* __restrict__ dst, int64_t n,
                                 uint64_t seed, float scale) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += step) {
    const float v =
        __fmul_rn(RandomUnitDevice(seed, static_cast<uint64_t>(i)), scale);
    if constexpr (kType == GgmlType::kF32) {
      static_cast<float*>(dst)[i] = v;
    } else if constexpr (kType == GgmlType::kF16) {
      static_cast<uint16_t*>(dst)[i] = F32ToF16Bits(v);
    } else {
      static_cast<uint16_t*>(dst)[i] = F32ToBf16Bits(v);
    }
  }
}

}  // namespace

void LaunchFillRandom(GgmlType type, void* dst, int64_t n, uint64_t seed,
                      float scale, cudaStream_t stream) {
  KVS_CHECK(type == GgmlType::kF32 || type == GgmlType::kF16 ||
            type == GgmlType::kBF16)
      << "LaunchFillRandom: type " << TypeName(type);
  KVS_CHECK(n >= 0) << n;
  if (n == 0) return;
  const auto blocks = static_cast<unsigned>(
      std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kMaxBlocks));
  switch (type) {
    case GgmlType::kF32:
      FillRandomKernel<GgmlType::kF32>
          <<<blocks, kThreads, 0, stream>>>(dst, n, seed, scale);
      break;
    case GgmlType::kF16:
      FillRandomKernel<GgmlType::kF16>
          <<<blocks, kThreads, 0, stream>>>(dst, n, seed, scale);
      break;
    default:
      FillRandomKernel<GgmlType::kBF16>
          <<<blocks, kThreads, 0, stream>>>(dst, n, seed, scale);
      break;
  }
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
