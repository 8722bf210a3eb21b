// Causal attention over the paged f16 KV cache.
//
// One (token, head) pair is one unit of work with its own fixed operation
// order: a score per position (8-lane dot, fixed reduction, times scale),
// max, exp, an 8-lane sum, probabilities = e * (1 / sum), then V accumulated
// by fma over positions 0..p in order. Nothing depends on the other tokens of
// the batch or on the thread that runs the pair, so a token's output is bitwise
// the same in any batch.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"
#include "kernels/f16.h"

namespace kvsession::kernels {
namespace {

// e[j] = exp(s[j] - mx) for j < n; the scalar tail rounds like Exp8.
void ExpShifted(float* s, int64_t n, float mx) {
  int64_t j = 0;
#if KVS_CPU_AVX2
  const __m256 vmx = _mm256_set1_ps(mx);
  for (; j + simd::kLanes <= n; j += simd::kLanes) {
    _mm256_storeu_ps(s + j,
                     simd::Exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vmx)));
  }
#endif
  for (; j < n; ++j) s[j] = simd::ExpScalar(s[j] - mx);
}

// out[d] = fma(p[j], v[j][d], out[d]) for j = 0..m-1 in order: each element
// keeps its own fixed sequence; the 64-wide chunks only keep it in registers.
void AccumulateV(const float* p, const uint16_t* v, int64_t m, int64_t hd,
                 float* out) {
  int64_t d0 = 0;
#if KVS_CPU_AVX2
  constexpr int kRegs = 8;
  for (; d0 + kRegs * simd::kLanes <= hd; d0 += kRegs * simd::kLanes) {
    __m256 acc[kRegs];
    for (int i = 0; i < kRegs; ++i) {
      acc[i] = _mm256_loadu_ps(out + d0 + i * simd::kLanes);
    }
    for (int64_t j = 0; j < m; ++j) {
      const __m256 w = _mm256_set1_ps(p[j]);
      const uint16_t* vj = v + j * hd + d0;
      for (int i = 0; i < kRegs; ++i) {
        acc[i] =
            _mm256_fmadd_ps(w, simd::LoadF16x8(vj + i * simd::kLanes), acc[i]);
      }
    }
    for (int i = 0; i < kRegs; ++i) {
      _mm256_storeu_ps(out + d0 + i * simd::kLanes, acc[i]);
    }
  }
  for (; d0 + simd::kLanes <= hd; d0 += simd::kLanes) {
    __m256 acc = _mm256_loadu_ps(out + d0);
    for (int64_t j = 0; j < m; ++j) {
      acc = _mm256_fmadd_ps(_mm256_set1_ps(p[j]),
                            simd::LoadF16x8(v + j * hd + d0), acc);
    }
    _mm256_storeu_ps(out + d0, acc);
  }
#endif
  for (; d0 < hd; ++d0) {
    float acc = out[d0];
    for (int64_t j = 0; j < m; ++j) {
      acc = std::fma(p[j], HalfToFloat(v[j * hd + d0]), acc);
    }
    out[d0] = acc;
  }
}

inline float RoundToHalf(float x) { return HalfToFloat(FloatToHalf(x)); }

// Q and the softmax weights are rounded to f16 before they meet the f16 K
// and V, where ggml rounds them in llama.cpp's attention (its matmuls
// convert the f32 operand to the f16 one's type). Keeping those rounding
// points keeps our logits within noise of the reference implementation;
// the cost is one conversion per element.
void AttendOne(const KvCacheView& kv, int32_t layer, int32_t kv_head,
               int32_t pos, const int32_t* table, const float* q_in,
               float scale, float* q, float* scores, float* out) {
  const int32_t hd = kv.head_dim;
  for (int32_t i = 0; i < hd; ++i) q[i] = RoundToHalf(q_in[i]);
  const int32_t bs = kv.block_size;
  const int64_t n = int64_t{pos} + 1;
  for (int64_t j0 = 0; j0 < n; j0 += bs) {
    const int32_t block = table[j0 / bs];
    KVS_CHECK(block >= 0 && block < kv.num_blocks) << "block " << block;
    const uint16_t* k = kv.base + kv.Offset(block, layer, 0, kv_head, 0);
    const int64_t m = std::min<int64_t>(bs, n - j0);
    float* s = scores + j0;
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) simd::DotF32F16x4(q, k + i * hd, hd, hd, s + i);
    for (; i < m; ++i) s[i] = simd::DotF32F16(q, k + i * hd, hd);
    for (i = 0; i < m; ++i) s[i] = s[i] * scale;
  }
  float mx = scores[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, scores[j]);
  ExpShifted(scores, n, mx);
  const float inv = 1.0f / simd::SumF32(scores, n);
  for (int64_t j = 0; j < n; ++j) scores[j] = RoundToHalf(scores[j] * inv);
  std::fill(out, out + hd, 0.0f);
  for (int64_t j0 = 0; j0 < n; j0 += bs) {
    const uint16_t* v =
        kv.base + kv.Offset(table[j0 / bs], layer, 1, kv_head, 0);
    AccumulateV(scores + j0, v, std::min<int64_t>(bs, n - j0), hd, out);
  }
}

}  // namespace

void Attention(const KvCacheView& kv, int32_t layer,
               const TokenPlacement& placement, const float* q,
               const AttentionParams& params, float* out, const CpuExec& exec) {
  const int32_t n_heads = params.n_heads;
  KVS_CHECK(layer >= 0 && layer < kv.n_layers) << "layer " << layer;
  KVS_CHECK(n_heads > 0 && kv.n_kv_heads > 0 && n_heads % kv.n_kv_heads == 0)
      << "n_heads " << n_heads << " n_kv_heads " << kv.n_kv_heads;
  const int32_t group = n_heads / kv.n_kv_heads;
  const int32_t hd = kv.head_dim;
  const int64_t n_items = int64_t{placement.n_tokens} * n_heads;
#pragma omp parallel num_threads(exec.n_threads) if (n_items > 1)
  {
    std::vector<float> scores;
    std::vector<float> q_half(static_cast<size_t>(hd));
    // Work per pair grows with its position: dynamic keeps threads busy.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < n_items; ++item) {
      const int64_t t = item / n_heads;
      const int32_t h = static_cast<int32_t>(item % n_heads);
      const int32_t pos = placement.positions[t];
      KVS_CHECK(pos >= 0) << "position " << pos;
      if (scores.size() < static_cast<size_t>(pos) + 1) {
        scores.resize(static_cast<size_t>(pos) + 1);
      }
      const int64_t off = (t * n_heads + h) * hd;
      AttendOne(kv, layer, h / group, pos, placement.block_tables[t], q + off,
                params.scale, q_half.data(), scores.data(), out + off);
    }
  }
}

}  // namespace kvsession::kernels
