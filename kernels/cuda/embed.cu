// Token embedding lookup: out[t] = row tokens[t] of an F32, F16 or BF16
// table, as f32. The conversions are exact bit manipulations, so every value
// is bitwise equal to the CPU Embed (HalfToFloat and Bf16ToFloat), NaN
// payloads included.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/f16_device.cuh"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One CTA per token; the table row is read in column order so that loads
// and stores coalesce.
template <GgmlType kType>
__global__ void EmbedKernel(const uint8_t* __restrict__ table,
                            uint64_t row_bytes, int64_t rows, int64_t cols,
                            const int32_t* __restrict__ tokens,
                            float* __restrict__ out) {
  const int64_t t = blockIdx.x;
  const int32_t tok = tokens[t];
  if (tok < 0 || tok >= rows) {
    // The CPU op aborts on this broken invariant; a trap makes the stream's
    // next check fail instead of reading outside the table.
    if (threadIdx.x == 0) {
      printf("LaunchEmbed: token %d outside the table of %lld rows\n", tok,
             static_cast<long long>(rows));
    }
    __trap();
  }
  const uint8_t* row = table + static_cast<uint64_t>(tok) * row_bytes;
  float* y = out + t * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    if constexpr (kType == GgmlType::kF32) {
      y[c] = reinterpret_cast<const float*>(row)[c];
    } else if constexpr (kType == GgmlType::kF16) {
      y[c] = F16BitsToF32(reinterpret_cast<const uint16_t*>(row)[c]);
    } else {
      y[c] = __uint_as_float(uint32_t{reinterpret_cast<const uint16_t*>(row)[c]}
                             << 16);
    }
  }
}

}  // namespace

void LaunchEmbed(const WeightView& table, const int32_t* tokens,
                 int64_t n_tokens, float* out, cudaStream_t stream) {
  KVS_CHECK(n_tokens >= 0 && n_tokens <= INT32_MAX) << n_tokens;
  if (n_tokens == 0 || table.cols == 0) return;
  const auto* base = static_cast<const uint8_t*>(table.data);
  const dim3 grid(static_cast<unsigned>(n_tokens));
  const uint64_t rb = table.row_bytes;
  switch (table.type) {
    case GgmlType::kF32:
      EmbedKernel<GgmlType::kF32><<<grid, kThreads, 0, stream>>>(
          base, rb, table.rows, table.cols, tokens, out);
      break;
    case GgmlType::kF16:
      EmbedKernel<GgmlType::kF16><<<grid, kThreads, 0, stream>>>(
          base, rb, table.rows, table.cols, tokens, out);
      break;
    case GgmlType::kBF16:
      EmbedKernel<GgmlType::kBF16><<<grid, kThreads, 0, stream>>>(
          base, rb, table.rows, table.cols, tokens, out);
      break;
    default:
      KVS_CHECK(false) << "LaunchEmbed: table type " << TypeName(table.type)
                       << " (dequantize the table to F16/BF16/F32 first)";
  }
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
