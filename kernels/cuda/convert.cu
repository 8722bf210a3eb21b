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
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// internal::FloatToHalfPortable of kernels/f16.cc (F16C gives the same bits).
__device__ __forceinline__ uint16_t F32ToF16Bits(float f) {
  const uint32_t u = __float_as_uint(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) {
    return static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  }
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);
  if (a < 0x38800000u) {
    // The f32 add rounds the value to the half-subnormal ulp, ties to even.
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
