#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/ops.h"

namespace kvsession::kernels {

void Rope(float* x, int64_t n_tokens, int32_t n_heads, const int32_t* positions,
          const RopeParams& params, const CpuExec& exec) {
  const int32_t hd = params.head_dim;
  const int32_t rot = params.rot_dim;
  KVS_CHECK(rot > 0 && rot % 2 == 0 && rot <= hd)
      << "rot_dim " << rot << " head_dim " << hd;
  const int32_t half = rot / 2;
  // ggml's schedule: theta_i = freq_scale * (pos * theta_scale^i), the power
  // built by repeated f32 multiplication. It depends on the position only, so
  // a token rotates identically in any batch.
  const float theta_scale =
      std::pow(params.freq_base, -2.0f / static_cast<float>(rot));
#pragma omp parallel num_threads(exec.n_threads) if (n_tokens > 1)
  {
    std::vector<float> cs(2 * static_cast<size_t>(half));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tokens; ++t) {
      float theta = static_cast<float>(positions[t]);
      for (int32_t i = 0; i < half; ++i) {
        const float th = params.freq_scale * theta;
        cs[2 * i] = std::cos(th);
        cs[2 * i + 1] = std::sin(th);
        theta *= theta_scale;
      }
      for (int32_t h = 0; h < n_heads; ++h) {
        float* xh = x + (t * n_heads + h) * hd;
        // kNormal pairs (2i, 2i+1); kNeox pairs (i, i + rot/2).
        const int32_t stride = params.mode == RopeMode::kNormal ? 2 : 1;
        const int32_t other = params.mode == RopeMode::kNormal ? 1 : half;
        for (int32_t i = 0; i < half; ++i) {
          const float c = cs[2 * i];
          const float s = cs[2 * i + 1];
          const float x0 = xh[i * stride];
          const float x1 = xh[i * stride + other];
          xh[i * stride] = x0 * c - x1 * s;
          xh[i * stride + other] = x0 * s + x1 * c;
        }
      }
    }
  }
}

}  // namespace kvsession::kernels
