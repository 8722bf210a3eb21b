// out = x * s elementwise, one rounding: the CPU Scale's bits.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

__global__ void ScaleKernel(const float* x, float s, int64_t n, float* out) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += step) {
    out[i] = __fmul_rn(x[i], s);
  }
}

}  // namespace

void LaunchScale(const float* x, float s, int64_t n, float* out,
                 cudaStream_t stream) {
  KVS_CHECK(n >= 0) << n;
  if (n == 0) return;
  const int64_t blocks =
      std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kMaxBlocks);
  ScaleKernel<<<blocks, kThreads, 0, stream>>>(x, s, n, out);
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
