// out = silu(gate) * up elementwise with the CPU SwiGlu's arithmetic: its
// exp (simd::ExpScalar: Cody-Waite reduction and a degree-5 polynomial, with
// fma where it uses fma), then g / (1 + e) * u, each op rounded once, so
// finite results are bitwise equal to the CPU op (the parity tests state
// 1e-6 relative; NaN payloads differ between x86 and the GPU). out may
// alias gate or up. LaunchSwiGluRounded writes the result rounded for a GEMM
// input instead (bitwise SwiGlu then ConvertRows, in one launch).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/exp_device.cuh"
#include "kernels/cuda/f16_device.cuh"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

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

// One thread per element of a [n_rows_padded][dim] GEMM input: grid.x the
// rows, grid.y tiles of kThreads columns; padding rows get zeros.
template <bool kBf16>
__global__ void __launch_bounds__(kThreads)
    SwiGluRoundedKernel(const float* __restrict__ gate,
                        const float* __restrict__ up, int64_t n_rows,
                        int64_t dim, uint16_t* __restrict__ out) {
  const int64_t r = blockIdx.x;
  const int64_t c = int64_t{blockIdx.y} * kThreads + threadIdx.x;
  if (c >= dim) return;
  const int64_t i = r * dim + c;
  if (r >= n_rows) {
    out[i] = 0;
    return;
  }
  const float y = SwiGluOne(gate[i], up[i]);
  out[i] = kBf16 ? F32ToBf16Bits(y) : F32ToF16Bits(y);
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

void LaunchSwiGluRounded(const float* gate, const float* up, int64_t n_rows,
                         int64_t n_rows_padded, int64_t dim, GgmlType to,
                         void* out, cudaStream_t stream) {
  KVS_CHECK(to == GgmlType::kF16 || to == GgmlType::kBF16)
      << "LaunchSwiGluRounded: to " << TypeName(to);
  KVS_CHECK(n_rows >= 0 && n_rows <= n_rows_padded &&
            n_rows_padded <= INT32_MAX && dim >= 0 &&
            (dim + kThreads - 1) / kThreads <= 65535)
      << "n_rows " << n_rows << " n_rows_padded " << n_rows_padded << " dim "
      << dim;
  if (n_rows_padded == 0 || dim == 0) return;
  const dim3 grid(static_cast<unsigned>(n_rows_padded),
                  static_cast<unsigned>((dim + kThreads - 1) / kThreads));
  auto* y = static_cast<uint16_t*>(out);
  if (to == GgmlType::kBF16) {
    SwiGluRoundedKernel<true><<<grid, kThreads, 0, stream>>>(gate, up, n_rows,
                                                             dim, y);
  } else {
    SwiGluRoundedKernel<false><<<grid, kThreads, 0, stream>>>(gate, up, n_rows,
                                                              dim, y);
  }
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
