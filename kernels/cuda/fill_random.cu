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
#include "kernels/cuda/f16_device.cuh"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // grid-stride beyond this

template <GgmlType kType>
__global__ void FillRandomKernel(void* __restrict__ dst, int64_t n,
                                 uint64_t seed, float scale) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += step) {
    const float v =
        __fmul_rn(RandomUnit(seed, static_cast<uint64_t>(i)), scale);
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
