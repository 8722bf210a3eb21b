// out[r] = x[r] + bias, bitwise equal to the CPU AddBias (one IEEE f32 add
// per element). out may alias x: each element is read and written by the
// same thread, so the pointers carry no __restrict__.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One CTA per row; threads stride over its elements.
__global__ void AddBiasKernel(const float* x, const float* bias, int64_t dim,
                              float* out) {
  const int64_t row = blockIdx.x;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    out[row * dim + i] = __fadd_rn(x[row * dim + i], bias[i]);
  }
}

}  // namespace

void LaunchAddBias(const float* x, const float* bias, int64_t n_rows,
                   int64_t dim, float* out, cudaStream_t stream) {
  KVS_CHECK(n_rows >= 0 && n_rows <= INT32_MAX && dim >= 0)
      << "n_rows " << n_rows << " dim " << dim;
  if (n_rows == 0 || dim == 0) return;
  const int threads =
      static_cast<int>(std::min<int64_t>(kThreads, (dim + 31) / 32 * 32));
  AddBiasKernel<<<static_cast<unsigned>(n_rows), threads, 0, stream>>>(
      x, bias, dim, out);
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
