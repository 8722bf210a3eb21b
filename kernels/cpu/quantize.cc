// f32 to the GGUF types, bit-exact with ggml's *_ref quantizers (model files
// written by tests, activations that meet quantized weights in MatMul).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/check.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/simd.h"
#include "kernels/f16.h"

namespace kvsession::kernels {
namespace {

// q4_0 / q5_0: symmetric, d = (signed value of largest magnitude) / -2^(b-1).
template <int kBits, typename Block>
void QuantizeSymmetric(const float* x, Block* y, int64_t nb) {
  constexpr int kMaxQ = (1 << kBits) - 1;
  constexpr float kOffset = static_cast<float>(1 << (kBits - 1)) + 0.5f;
  for (int64_t i = 0; i < nb; ++i, x += kQk) {
    float amax = 0.0f;
    float max = 0.0f;
    for (int j = 0; j < kQk; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -static_cast<float>(1 << (kBits - 1));
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = FloatToHalf(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQk / 2; ++j) {
      // ggml truncates through int8_t after adding offset + 0.5.
      const int q0 = std::min(
          kMaxQ, static_cast<int>(static_cast<int8_t>(x[j] * id + kOffset)));
      const int q1 = std::min(
          kMaxQ,
          static_cast<int>(static_cast<int8_t>(x[j + kQk / 2] * id + kOffset)));
      y[i].qs[j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= static_cast<uint32_t>((q0 >> 4) & 1) << j;
      qh |= static_cast<uint32_t>((q1 >> 4) & 1) << (j + kQk / 2);
    }
    if constexpr (kBits == 5) std::memcpy(y[i].qh, &qh, sizeof qh);
  }
}

// q4_1 / q5_1: affine, d = (max - min) / (2^b - 1), m = min.
template <int kBits, typename Block>
void QuantizeAffine(const float* x, Block* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQk) {
    float min = FLT_MAX;
    float max = -FLT_MAX;
    for (int j = 0; j < kQk; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / static_cast<float>((1 << kBits) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = FloatToHalf(d);
    y[i].m = FloatToHalf(min);
    uint32_t qh = 0;
    for (int j = 0; j < kQk / 2; ++j) {
      const float v0 = (x[j] - min) * id + 0.5f;
      const float v1 = (x[j + kQk / 2] - min) * id + 0.5f;
      int q0, q1;
      if constexpr (kBits == 4) {
        q0 = std::min(15, static_cast<int>(static_cast<int8_t>(v0)));
        q1 = std::min(15, static_cast<int>(static_cast<int8_t>(v1)));
      } else {
        q0 = static_cast<uint8_t>(v0);  // ggml does not clamp q5_1
        q1 = static_cast<uint8_t>(v1);
      }
      y[i].qs[j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= static_cast<uint32_t>((q0 >> 4) & 1) << j;
      qh |= static_cast<uint32_t>((q1 >> 4) & 1) << (j + kQk / 2);
    }
    if constexpr (kBits == 5) std::memcpy(y[i].qh, &qh, sizeof qh);
  }
}

}  // namespace

void QuantizeBlockQ8(const float* x, int8_t* qs, uint16_t* d_bits,
                     uint16_t* s_bits, Q8Rounding rounding) {
  const bool activation = rounding == Q8Rounding::kActivation;
  int sum = 0;
#if KVS_CPU_AVX2
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 v[4];
  __m256 vmax = _mm256_setzero_ps();
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    vmax = _mm256_max_ps(vmax, _mm256_and_ps(v[k], abs_mask));
  }
  __m128 m4 =
      _mm_max_ps(_mm256_extractf128_ps(vmax, 1), _mm256_castps256_ps128(vmax));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const float amax = _mm_cvtss_f32(m4);
  const float d = amax / 127.0f;
  const float id = activation ? (amax != 0.0f ? 127.0f / amax : 0.0f)
                              : (d != 0.0f ? 1.0f / d : 0.0f);
  const __m256 vid = _mm256_set1_ps(id);
  const __m256 half = _mm256_set1_ps(0.5f);
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256i q[4];
  __m256i vsum = _mm256_setzero_si256();
  for (int k = 0; k < 4; ++k) {
    // roundf (half away from zero) = sign(y) * (trunc|y| + (frac >= 0.5)).
    const __m256 y = _mm256_mul_ps(v[k], vid);
    __m256 r;
    if (activation) {
      r = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
      const __m256 a = _mm256_and_ps(y, abs_mask);
      const __m256 t =
          _mm256_round_ps(a, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
      const __m256 up = _mm256_and_ps(
          _mm256_cmp_ps(_mm256_sub_ps(a, t), half, _CMP_GE_OQ), one);
      r = _mm256_or_ps(_mm256_add_ps(t, up), _mm256_andnot_ps(abs_mask, y));
    }
    r = _mm256_min_ps(r, _mm256_set1_ps(127.0f));
    r = _mm256_max_ps(r, _mm256_set1_ps(-127.0f));
    q[k] = _mm256_cvtps_epi32(r);
    vsum = _mm256_add_epi32(vsum, q[k]);
  }
  const __m256i p01 = _mm256_packs_epi32(q[0], q[1]);
  const __m256i p23 = _mm256_packs_epi32(q[2], q[3]);
  const __m256i p = _mm256_permutevar8x32_epi32(
      _mm256_packs_epi16(p01, p23), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), p);
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), vsum);
  for (int32_t l : lanes) sum += l;
#else
  float amax = 0.0f;
  for (int j = 0; j < kQk; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = activation ? (amax != 0.0f ? 127.0f / amax : 0.0f)
                              : (d != 0.0f ? 1.0f / d : 0.0f);
  for (int j = 0; j < kQk; ++j) {
    // nearbyint rounds half to even in the default rounding mode.
    float r = activation ? std::nearbyint(x[j] * id) : std::round(x[j] * id);
    r = r < 127.0f ? r : 127.0f;  // clamps only a degenerate id (inf/NaN)
    r = r > -127.0f ? r : -127.0f;
    qs[j] = static_cast<int8_t>(r);
    sum += qs[j];
  }
#endif
  *d_bits = FloatToHalf(d);
  if (s_bits != nullptr) *s_bits = FloatToHalf(static_cast<float>(sum) * d);
}

bool CanQuantize(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
    case GgmlType::kQ8_0:
    case GgmlType::kQ8_1:
      return true;
    default:
      return false;
  }
}

void QuantizeRow(GgmlType type, const float* src, void* dst, int64_t n) {
  KVS_CHECK(CanQuantize(type)) << "cannot quantize to " << TypeName(type);
  const int64_t be = Traits(type).block_elems;
  KVS_CHECK(n % be == 0) << n << " is not a multiple of " << be;
  const int64_t nb = n / be;
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::kF16:
      simd::StoreF16(src, static_cast<uint16_t*>(dst), n);
      return;
    case GgmlType::kBF16: {
      auto* y = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) y[i] = FloatToBf16(src[i]);
      return;
    }
    case GgmlType::kQ4_0:
      QuantizeSymmetric<4>(src, static_cast<BlockQ4_0*>(dst), nb);
      return;
    case GgmlType::kQ5_0:
      QuantizeSymmetric<5>(src, static_cast<BlockQ5_0*>(dst), nb);
      return;
    case GgmlType::kQ4_1:
      QuantizeAffine<4>(src, static_cast<BlockQ4_1*>(dst), nb);
      return;
    case GgmlType::kQ5_1:
      QuantizeAffine<5>(src, static_cast<BlockQ5_1*>(dst), nb);
      return;
    case GgmlType::kQ8_0: {
      auto* y = static_cast<BlockQ8_0*>(dst);
      for (int64_t i = 0; i < nb; ++i) {
        QuantizeBlockQ8(src + i * kQk, y[i].qs, &y[i].d, nullptr,
                        Q8Rounding::kReference);
      }
      return;
    }
    case GgmlType::kQ8_1: {
      auto* y = static_cast<BlockQ8_1*>(dst);
      for (int64_t i = 0; i < nb; ++i) {
        QuantizeBlockQ8(src + i * kQk, y[i].qs, &y[i].d, &y[i].s,
                        Q8Rounding::kReference);
      }
      return;
    }
    default:
      KVS_CHECK(false) << "unreachable";
  }
}

}  // namespace kvsession::kernels
