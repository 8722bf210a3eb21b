// out = a + b elementwise, bitwise equal to the CPU Add (one IEEE f32 add per
// element). out may alias a or b: every element is read and written by the
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
constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // grid-stride beyond this

// Four elements per step when all pointers are 16-byte aligned.
__global__ void AddKernel4(const float4* a, const float4* b, int64_t n4,
                           float4* out) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4;
       i += step) {
    const float4 x = a[i];
    const float4 y = b[i];
    out[i] = make_float4(__fadd_rn(x.x, y.x), __fadd_rn(x.y, y.y),
                         __fadd_rn(x.z, y.z), __fadd_rn(x.w, y.w));
  }
}

__global__ void AddKernel(const float* a, const float* b, int64_t begin,
                          int64_t n, float* out) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = begin + blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
       i < n; i += step) {
    out[i] = __fadd_rn(a[i], b[i]);
  }
}

int64_t Blocks(int64_t n) {
  return std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kMaxBlocks);
}

bool Aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

}  // namespace

void LaunchAdd(const float* a, const float* b, int64_t n, float* out,
               cudaStream_t stream) {
  KVS_CHECK(n >= 0) << n;
  if (n == 0) return;
  int64_t done = 0;
  if (Aligned16(a) && Aligned16(b) && Aligned16(out) && n >= 4) {
    const int64_t n4 = n / 4;
    AddKernel4<<<Blocks(n4), kThreads, 0, stream>>>(
        reinterpret_cast<const float4*>(a), reinterpret_cast<const float4*>(b),
        n4, reinterpret_cast<float4*>(out));
    KVS_CUDA_LAUNCH_CHECK();
    done = n4 * 4;
  }
  if (done < n) {
    AddKernel<<<Blocks(n - done), kThreads, 0, stream>>>(a, b, done, n, out);
    KVS_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace kvsession::kernels::cuda
