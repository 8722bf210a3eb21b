#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/check.h"
#include "kernels/cpu/ops.h"

namespace kvsession::kernels {

void SplitColumns(const float* src, int64_t n_rows,
                  std::span<const int64_t> widths, std::span<float* const> dsts,
                  const CpuExec& exec) {
  KVS_CHECK(widths.size() == dsts.size() && !widths.empty() &&
            widths.size() <= static_cast<size_t>(kMaxSplitColumns))
      << "SplitColumns: " << widths.size() << " widths, " << dsts.size()
      << " outputs";
  int64_t total = 0;
  for (int64_t w : widths) total += w;
#pragma omp parallel for num_threads(exec.n_threads) \
    schedule(static) if (n_rows > 16)
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* s = src + r * total;
    for (size_t i = 0; i < widths.size(); ++i) {
      std::memcpy(dsts[i] + r * widths[i], s, widths[i] * sizeof(float));
      s += widths[i];
    }
  }
}

}  // namespace kvsession::kernels
