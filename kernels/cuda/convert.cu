// f32 rows to F16 or BF16 for GEMM inputs. The conversions are the bit
// manipulations of kernels/f16.cc (round to nearest even; NaN keeps its top
// payload bits and turns quiet; overflow to inf; subnormal halves rounded by
// one f32 add), so every element is bitwise equal to QuantizeRow /
// FloatToHalf / FloatToBf16. Row r of x goes to out + r * ld_out; rows
// n_rows .. n_rows_padded - 1 get n_cols zeros; columns n_cols .. ld_out - 1
// are never written.
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

// One CTA per output row (rows beyond n_rows are zero padding).
template <bool kBf16>
__global__ void ConvertRowsKernel(const float* __restrict__ x, int64_t n_rows,
                                  int64_t n_cols, int64_t ld_out,
                                  uint16_t* __restrict__ out) {
  const int64_t r = blockIdx.x;
  uint16_t* y = out + r * ld_out;
  if (r >= n_rows) {
    for (int64_t c = threadIdx.x; c < n_cols; c += blockDim.x) y[c] = 0;
    return;
  }
  const float* xr = x + r * n_cols;
  for (int64_t c = threadIdx.x; c < n_cols; c += blockDim.x) {
    y[c] = kBf16 ? F32ToBf16Bits(xr[c]) : F32ToF16Bits(xr[c]);
  }
}

}  // namespace

void LaunchConvertRows(const float* x, int64_t n_rows, int64_t n_rows_padded,
                       int64_t n_cols, int64_t ld_out, GgmlType to, void* out,
                       cudaStream_t stream) {
  KVS_CHECK(to == GgmlType::kF16 || to == GgmlType::kBF16)
      << "LaunchConvertRows: to " << TypeName(to);
  KVS_CHECK(n_rows >= 0 && n_rows <= n_rows_padded &&
            n_rows_padded <= INT32_MAX && n_cols >= 0 && ld_out >= n_cols)
      << "n_rows " << n_rows << " n_rows_padded " << n_rows_padded << " n_cols "
      << n_cols << " ld_out " << ld_out;
  if (n_rows_padded == 0 || n_cols == 0) return;
  const unsigned grid = static_cast<unsigned>(n_rows_padded);
  auto* y = static_cast<uint16_t*>(out);
  if (to == GgmlType::kBF16) {
    ConvertRowsKernel<true>
        <<<grid, kThreads, 0, stream>>>(x, n_rows, n_cols, ld_out, y);
  } else {
    ConvertRowsKernel<false>
        <<<grid, kThreads, 0, stream>>>(x, n_rows, n_cols, ld_out, y);
  }
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
