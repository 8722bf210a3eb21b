#include <algorithm>
#include <cstdint>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

namespace kvsession::kernels {
namespace {

// The operation sequence of ops.h; scalar and vector forms round alike.
inline float GeGluScalar(float g, float u) {
  const float inner = g * (kGeluA + kGeluB * (g * g));
  return g / (1.0f + simd::ExpScalar(-inner)) * u;
}

void GeGluRange(const float* gate, const float* up, int64_t begin, int64_t end,
                float* out) {
  int64_t i = begin;
#if KVS_CPU_AVX2
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 a = _mm256_set1_ps(kGeluA);
  const __m256 b = _mm256_set1_ps(kGeluB);
  for (; i + simd::kLanes <= end; i += simd::kLanes) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 t = _mm256_add_ps(a, _mm256_mul_ps(b, _mm256_mul_ps(g, g)));
    const __m256 inner = _mm256_mul_ps(g, t);
    const __m256 e = simd::Exp8(_mm256_xor_ps(inner, sign));
    const __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, e));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
  }
#endif
  for (; i < end; ++i) out[i] = GeGluScalar(gate[i], up[i]);
}

}  // namespace

void GeGlu(const float* gate, const float* up, int64_t n, float* out,
           const CpuExec& exec) {
  constexpr int64_t kChunk = 4096;  // multiple of 8: no tail inside chunks
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for num_threads(exec.n_threads) \
    schedule(static) if (n_chunks > 1)
  for (int64_t c = 0; c < n_chunks; ++c) {
    GeGluRange(gate, up, c * kChunk, std::min(n, (c + 1) * kChunk), out);
  }
}

}  // namespace kvsession::kernels
