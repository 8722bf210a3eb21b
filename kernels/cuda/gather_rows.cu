// dst[i] = src[rows[i]] for rows of `dim` floats; `rows` is a device array.
// One CTA per destination row; a plain copy, so bitwise equal to the CPU.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// T is float4 when dim % 4 == 0 and both bases are 16-byte aligned (then
// every row is), float otherwise; dim_t counts T elements.
template <typename T>
__global__ void GatherRowsKernel(const T* __restrict__ src,
                                 const int32_t* __restrict__ rows,
                                 int64_t dim_t, T* __restrict__ dst) {
  const int64_t r = blockIdx.x;
  const T* s = src + static_cast<int64_t>(rows[r]) * dim_t;
  T* d = dst + r * dim_t;
  for (int64_t c = threadIdx.x; c < dim_t; c += blockDim.x) d[c] = s[c];
}

}  // namespace

void LaunchGatherRows(const float* src, const int32_t* rows, int64_t n_rows,
                      int64_t dim, float* dst, cudaStream_t stream) {
  KVS_CHECK(n_rows >= 0 && n_rows <= INT32_MAX && dim >= 0)
      << "n_rows " << n_rows << " dim " << dim;
  if (n_rows == 0 || dim == 0) return;
  const bool vec = dim % 4 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  const unsigned grid = static_cast<unsigned>(n_rows);
  if (vec) {
    GatherRowsKernel<float4><<<grid, kThreads, 0, stream>>>(
        reinterpret_cast<const float4*>(src), rows, dim / 4,
        reinterpret_cast<float4*>(dst));
  } else {
    GatherRowsKernel<float><<<grid, kThreads, 0, stream>>>(src, rows, dim, dst);
  }
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
