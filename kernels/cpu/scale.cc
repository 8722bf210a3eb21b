#include <algorithm>
#include <cstdint>

#include "kernels/cpu/ops.h"

namespace kvsession::kernels {

void Scale(const float* x, float s, int64_t n, float* out,
           const CpuExec& exec) {
  constexpr int64_t kChunk = 16384;
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for num_threads(exec.n_threads) \
    schedule(static) if (n_chunks > 1)
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; ++i) out[i] = x[i] * s;
  }
}

}  // namespace kvsession::kernels
