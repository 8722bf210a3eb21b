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
// Elements per thread: a CTA covers kThreads * kPerThread columns of one row.
constexpr int kPerThread = 8;
constexpr int64_t kTileCols = int64_t{kThreads} * kPerThread;

// One CTA per (row, tile of kTileCols columns); every thread converts
// kPerThread elements with its loads issued together. A CTA per row that
// walked the whole row was latency bound: a 14336-wide row took 56 load
// round trips one after another per thread (about 20 us at 64 rows on an
// H200).
// kVector: rows are whole 16-byte units (n_cols and ld_out multiples of 8,
// aligned pointers), so each thread moves two float4 and one uint4.
template <bool kBf16, bool kVector>
__global__ void __launch_bounds__(kThreads)
    ConvertRowsKernel(const float* __restrict__ x, int64_t n_rows,
                      int64_t n_cols, int64_t ld_out,
                      uint16_t* __restrict__ out) {
  const int64_t r = blockIdx.x;
  const int64_t tile = int64_t{blockIdx.y} * kTileCols;
  uint16_t* y = out + r * ld_out;
  const float* xr = x + r * n_cols;
  const bool pad = r >= n_rows;
  if constexpr (kVector) {
    const int64_t c = tile + int64_t{threadIdx.x} * kPerThread;
    if (c >= n_cols) return;
    uint4 packed = make_uint4(0, 0, 0, 0);
    if (!pad) {
      const float4 a = *reinterpret_cast<const float4*>(xr + c);
      const float4 b = *reinterpret_cast<const float4*>(xr + c + 4);
      const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
      uint32_t w[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t lo = kBf16 ? F32ToBf16Bits(v[2 * i])
                                  : F32ToF16Bits(v[2 * i]);
        const uint32_t hi = kBf16 ? F32ToBf16Bits(v[2 * i + 1])
                                  : F32ToF16Bits(v[2 * i + 1]);
        w[i] = lo | (hi << 16);  // little-endian: element 2i first
      }
      packed = make_uint4(w[0], w[1], w[2], w[3]);
    }
    *reinterpret_cast<uint4*>(y + c) = packed;
  } else {
    float v[kPerThread];
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int64_t c = tile + int64_t{i} * kThreads + threadIdx.x;
      v[i] = (!pad && c < n_cols) ? xr[c] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int64_t c = tile + int64_t{i} * kThreads + threadIdx.x;
      if (c >= n_cols) break;
      y[c] = pad ? uint16_t{0}
                 : (kBf16 ? F32ToBf16Bits(v[i]) : F32ToF16Bits(v[i]));
    }
  }
}

template <bool kBf16>
void Launch(const float* x, int64_t n_rows, int64_t n_rows_padded,
            int64_t n_cols, int64_t ld_out, uint16_t* y, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n_rows_padded),
                  static_cast<unsigned>((n_cols + kTileCols - 1) / kTileCols));
  const bool vector = n_cols % 8 == 0 && ld_out % 8 == 0 &&
                      reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(y) % 16 == 0;
  if (vector) {
    ConvertRowsKernel<kBf16, true>
        <<<grid, kThreads, 0, stream>>>(x, n_rows, n_cols, ld_out, y);
  } else {
    ConvertRowsKernel<kBf16, false>
        <<<grid, kThreads, 0, stream>>>(x, n_rows, n_cols, ld_out, y);
  }
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace

void LaunchConvertRows(const float* x, int64_t n_rows, int64_t n_rows_padded,
                       int64_t n_cols, int64_t ld_out, GgmlType to, void* out,
                       cudaStream_t stream) {
  KVS_CHECK(to == GgmlType::kF16 || to == GgmlType::kBF16)
      << "LaunchConvertRows: to " << TypeName(to);
  KVS_CHECK(n_rows >= 0 && n_rows <= n_rows_padded &&
            n_rows_padded <= INT32_MAX && n_cols >= 0 && ld_out >= n_cols &&
            (n_cols + kTileCols - 1) / kTileCols <= 65535)
      << "n_rows " << n_rows << " n_rows_padded " << n_rows_padded << " n_cols "
      << n_cols << " ld_out " << ld_out;
  if (n_rows_padded == 0 || n_cols == 0) return;
  auto* y = static_cast<uint16_t*>(out);
  if (to == GgmlType::kBF16) {
    Launch<true>(x, n_rows, n_rows_padded, n_cols, ld_out, y, stream);
  } else {
    Launch<false>(x, n_rows, n_rows_padded, n_cols, ld_out, y, stream);
  }
}

}  // namespace kvsession::kernels::cuda
