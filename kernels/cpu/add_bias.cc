#include <cstdint>

#include "kernels/cpu/ops.h"

namespace kvsession::kernels {

void AddBias(const float* x, const float* bias, int64_t n_rows, int64_t dim,
             float* out, const CpuExec& exec) {
#pragma omp parallel for num_threads(exec.n_threads) \
    schedule(static) if (n_rows * dim > 16384)
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * dim;
    float* o = out + r * dim;
    for (int64_t i = 0; i < dim; ++i) o[i] = xr[i] + bias[i];
  }
}

}  // namespace kvsession::kernels
