// out = gelu(gate) * up elementwise with the CPU GeGlu's arithmetic (see
// kernels/cpu/ops.h): g / (1 + exp(-(g * (kA + kB * g * g)))) * u with the
// CPU's exp, each op rounded once, so finite results are bitwise the CPU
// op's (NaN payloads may differ). out may alias gate or up.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/exp_device.cuh"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

__global__ void GeGluKernel(const float* gate, const float* up, int64_t n,
                            float* out) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += step) {
    const float g = gate[i];
    const float t =
        __fadd_rn(kGeluA, __fmul_rn(kGeluB, __fmul_rn(g, g)));
    const float e = ExpLikeCpu(-__fmul_rn(g, t));
    out[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, e)), up[i]);
  }
}

}  // namespace

void LaunchGeGlu(const float* gate, const float* up, int64_t n, float* out,
                 cudaStream_t stream) {
  KVS_CHECK(n >= 0) << n;
  if (n == 0) return;
  const int64_t blocks =
      std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kMaxBlocks);
  GeGluKernel<<<blocks, kThreads, 0, stream>>>(gate, up, n, out);
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
