#include <cmath>
#include <cstdint>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

namespace kvsession::kernels {

void RmsNorm(const float* x, const float* weight, int64_t n_rows, int64_t dim,
             float eps, float* out, const CpuExec& exec) {
  // Rows are independent; the thread count only decides who computes a row.
#pragma omp parallel for num_threads(exec.n_threads) \
    schedule(static) if (n_rows > 1 && n_rows * dim >= 16384)
  for (int64_t row = 0; row < n_rows; ++row) {
    const float* xr = x + row * dim;
    float* yr = out + row * dim;
    // Sequential sum of f32 squares in double, as ggml's rms_norm: the
    // order is fixed by the row alone, and matching the reference
    // implementation's rounding here keeps our logits closest to it.
    double sum = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(xr[i] * xr[i]);
    const float mean = static_cast<float>(sum / static_cast<double>(dim));
    const float scale = 1.0f / std::sqrt(mean + eps);
    // ggml scales first and multiplies by the weight in a separate op.
    for (int64_t i = 0; i < dim; ++i) yr[i] = (xr[i] * scale) * weight[i];
  }
}

}  // namespace kvsession::kernels
