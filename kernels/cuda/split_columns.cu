// Rows of concatenated columns to one buffer per segment: the output of
// weights run as one GEMM (gemm.cc) reaching the buffers the model reads.
// A plain copy, so bitwise equal to the CPU SplitColumns.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;

struct Segments {
  float* dst[kMaxSplitColumns];
  int64_t width[kMaxSplitColumns];
  int64_t start[kMaxSplitColumns + 1];  // prefix sums; start[n] = row width
  int n;
};

// One thread per element: grid.x covers the rows, grid.y a row's columns.
__global__ void __launch_bounds__(kThreads)
    SplitColumnsKernel(const float* __restrict__ src, Segments seg) {
  const int64_t r = blockIdx.x;
  const int64_t c = int64_t{blockIdx.y} * kThreads + threadIdx.x;
  if (c >= seg.start[seg.n]) return;
  int i = 0;
  while (c >= seg.start[i + 1]) ++i;
  seg.dst[i][r * seg.width[i] + (c - seg.start[i])] =
      src[r * seg.start[seg.n] + c];
}

}  // namespace

void LaunchSplitColumns(const float* src, int64_t n_rows,
                        std::span<const int64_t> widths,
                        std::span<float* const> dsts, cudaStream_t stream) {
  KVS_CHECK(widths.size() == dsts.size() && !widths.empty() &&
            widths.size() <= static_cast<size_t>(kMaxSplitColumns))
      << "LaunchSplitColumns: " << widths.size() << " widths, " << dsts.size()
      << " outputs";
  KVS_CHECK(n_rows >= 0 && n_rows <= INT32_MAX) << "n_rows " << n_rows;
  Segments seg{};
  seg.n = static_cast<int>(widths.size());
  seg.start[0] = 0;
  for (int i = 0; i < seg.n; ++i) {
    KVS_CHECK(widths[i] >= 0) << "width " << widths[i];
    seg.dst[i] = dsts[i];
    seg.width[i] = widths[i];
    seg.start[i + 1] = seg.start[i] + widths[i];
  }
  const int64_t total = seg.start[seg.n];
  KVS_CHECK((total + kThreads - 1) / kThreads <= 65535) << "width " << total;
  if (n_rows == 0 || total == 0) return;
  const dim3 grid(static_cast<unsigned>(n_rows),
                  static_cast<unsigned>((total + kThreads - 1) / kThreads));
  SplitColumnsKernel<<<grid, kThreads, 0, stream>>>(src, seg);
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
