// RMS norm, one CTA per row. The CPU reference sums the f32 squares of a row
// in double, sequentially; here each of kThreads threads sums a fixed strided
// subset in double and CUB's block reduction (a fixed tree for a fixed block
// size) combines them. The order depends on `dim` only, never on n_rows or
// the grid, so a row normalizes identically in any batch. With double
// partial sums the rounded f32 mean nearly always equals the CPU's, and the
// rest is the CPU's f32 operation sequence, so results are mostly bitwise
// equal to the reference (tests allow 1e-5 relative).
//
// LaunchAddRmsNormRounded is the same kernel with the residual add before
// it and the rounding for a GEMM input after it (one launch for what Add,
// RmsNorm and ConvertRows do in three), with the same arithmetic: its
// outputs are bitwise those of the three ops.
#include <cuda_runtime.h>

#include <cstdint>
#include <cub/block/block_reduce.cuh>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/f16_device.cuh"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBatch = 16;  // loads in flight per thread

// Where a row's normalized values go: f32 (RmsNorm) or rounded to F16 or
// BF16 for a GEMM's input (the fused op), as ConvertRows rounds.
enum class Out { kF32, kF16, kBf16 };

// kResidual: x += residual first (stored back, as LaunchAdd). Rows at or past
// n_rows (a GEMM chunk's padding; rounded outputs only) are zeroed.
template <bool kResidual, Out kOut>
__global__ void __launch_bounds__(kThreads)
    RmsNormKernel(float* x, const float* residual,
                  const float* __restrict__ weight, int64_t n_rows,
                  int64_t dim, float eps, void* out) {
  // x, residual and out may alias (in place): each element is read before
  // it is written, by the same thread, so no __restrict__ on them.
  using BlockReduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  __shared__ float scale_shared;

  const int64_t row = blockIdx.x;
  float* xr = x + row * dim;
  if (row >= n_rows) {
    auto* y = static_cast<uint16_t*>(out) + row * dim;
    for (int64_t i = threadIdx.x; i < dim; i += kThreads) y[i] = 0;
    return;
  }

  // Each thread's elements are i = threadIdx.x + j * kThreads in increasing
  // j (the order of the sum). Loads go kBatch at a time before their use:
  // one at a time, a row of 4096 took 16 serial round trips per thread,
  // likely most of the 4.3 us an H200 measured for one decode row.
  double sum = 0.0;
  for (int64_t base = threadIdx.x; base < dim; base += kThreads * kBatch) {
    float v[kBatch];
    float r[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int64_t i = base + int64_t{j} * kThreads;
      v[j] = i < dim ? xr[i] : 0.0f;
      if constexpr (kResidual) r[j] = i < dim ? residual[row * dim + i] : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int64_t i = base + int64_t{j} * kThreads;
      if (i >= dim) break;
      if constexpr (kResidual) {
        v[j] = __fadd_rn(v[j], r[j]);
        xr[i] = v[j];
      }
      // The square is rounded to f32 first, as the CPU does.
      const float sq = __fmul_rn(v[j], v[j]);
      sum = __dadd_rn(sum, static_cast<double>(sq));
    }
  }
  const double total = BlockReduce(temp).Sum(sum);
  if (threadIdx.x == 0) {
    const float mean =
        __double2float_rn(__ddiv_rn(total, static_cast<double>(dim)));
    scale_shared = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
  }
  __syncthreads();
  const float scale = scale_shared;
  for (int64_t base = threadIdx.x; base < dim; base += kThreads * kBatch) {
    float v[kBatch], w[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int64_t i = base + int64_t{j} * kThreads;
      v[j] = i < dim ? xr[i] : 0.0f;
      w[j] = i < dim ? weight[i] : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int64_t i = base + int64_t{j} * kThreads;
      if (i >= dim) break;
      const float y = __fmul_rn(__fmul_rn(v[j], scale), w[j]);
      if constexpr (kOut == Out::kF32) {
        static_cast<float*>(out)[row * dim + i] = y;
      } else if constexpr (kOut == Out::kBf16) {
        static_cast<uint16_t*>(out)[row * dim + i] = F32ToBf16Bits(y);
      } else {
        static_cast<uint16_t*>(out)[row * dim + i] = F32ToF16Bits(y);
      }
    }
  }
}

template <bool kResidual>
void LaunchRounded(float* x, const float* residual, const float* weight,
                   int64_t n_rows, int64_t n_rows_padded, int64_t dim,
                   float eps, GgmlType to, void* out, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(n_rows_padded);
  if (to == GgmlType::kBF16) {
    RmsNormKernel<kResidual, Out::kBf16><<<grid, kThreads, 0, stream>>>(
        x, residual, weight, n_rows, dim, eps, out);
  } else {
    RmsNormKernel<kResidual, Out::kF16><<<grid, kThreads, 0, stream>>>(
        x, residual, weight, n_rows, dim, eps, out);
  }
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace

void LaunchRmsNorm(const float* x, const float* weight, int64_t n_rows,
                   int64_t dim, float eps, float* out, cudaStream_t stream) {
  KVS_CHECK(n_rows >= 0 && n_rows <= INT32_MAX && dim >= 0)
      << "n_rows " << n_rows << " dim " << dim;
  if (n_rows == 0 || dim == 0) return;
  // Without a residual x is only read.
  RmsNormKernel<false, Out::kF32>
      <<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(
          const_cast<float*>(x), nullptr, weight, n_rows, dim, eps, out);
  KVS_CUDA_LAUNCH_CHECK();
}

void LaunchAddRmsNormRounded(float* x, const float* residual,
                             const float* weight, int64_t n_rows,
                             int64_t n_rows_padded, int64_t dim, float eps,
                             GgmlType to, void* out, cudaStream_t stream) {
  KVS_CHECK(to == GgmlType::kF16 || to == GgmlType::kBF16)
      << "LaunchAddRmsNormRounded: to " << TypeName(to);
  KVS_CHECK(n_rows >= 0 && n_rows <= n_rows_padded &&
            n_rows_padded <= INT32_MAX && dim >= 0)
      << "n_rows " << n_rows << " n_rows_padded " << n_rows_padded << " dim "
      << dim;
  if (n_rows_padded == 0 || dim == 0) return;
  if (residual != nullptr) {
    LaunchRounded<true>(x, residual, weight, n_rows, n_rows_padded, dim, eps,
                        to, out, stream);
  } else {
    LaunchRounded<false>(x, residual, weight, n_rows, n_rows_padded, dim, eps,
                         to, out, stream);
  }
}

}  // namespace kvsession::kernels::cuda
