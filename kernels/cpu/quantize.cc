// f32 to the GGUF types, bit-exact with ggml's *_ref quantizers (model files
// written by tests, activations that meet quantized weights in MatMul). The
// K-quant weight types (Q4_K, Q5_K, Q6_K) use a simpler routine of our own:
// no scale search, but every element within half a step of its value.
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

// f16 bits of the smallest f16 h with h * n >= v (v >= 0): a super-block
// scale that covers every sub-block scale once those round up.
uint16_t HalfCovering(float v, float n) {
  uint16_t h = FloatToHalf(v / n);
  while (HalfToFloat(h) * n < v) ++h;  // positive halves: next value up
  return h;
}

// ceil(v / d) in [0, max] (0 where d is 0).
int CeilRatio(float v, float d, int max) {
  if (!(d > 0.0f)) return 0;
  return std::clamp(static_cast<int>(std::ceil(v / d)), 0, max);
}

// q4_K / q5_K: x ~ (d * sc_j) * q - dmin * m_j per 32-element sub-block j.
// Mins round up (the offset covers the sub-block's minimum), then scales
// round up (the 2^b - 1 steps cover its maximum), so rounding q to nearest
// never needs a clamp.
template <int kBits, typename Block>
void QuantizeKAffine(const float* x, Block* y, int64_t nb) {
  constexpr int kMaxQ = (1 << kBits) - 1;
  for (int64_t i = 0; i < nb; ++i, x += kQkK) {
    float lo[8], hi[8], need_min[8], need_scale[8];
    float max_min = 0.0f;
    for (int j = 0; j < 8; ++j) {
      lo[j] = *std::min_element(x + 32 * j, x + 32 * j + 32);
      hi[j] = *std::max_element(x + 32 * j, x + 32 * j + 32);
      need_min[j] = std::max(0.0f, -lo[j]);  // the format's offset is <= 0
      max_min = std::max(max_min, need_min[j]);
    }
    const uint16_t dmin_h = HalfCovering(max_min, 63.0f);
    const float dmin = HalfToFloat(dmin_h);
    uint8_t m[8], sc[8];
    float max_scale = 0.0f;
    for (int j = 0; j < 8; ++j) {
      m[j] = static_cast<uint8_t>(CeilRatio(need_min[j], dmin, 63));
      need_scale[j] = (hi[j] + dmin * static_cast<float>(m[j])) / kMaxQ;
      max_scale = std::max(max_scale, need_scale[j]);
    }
    const uint16_t d_h = HalfCovering(max_scale, 63.0f);
    const float d = HalfToFloat(d_h);
    Block& b = y[i];
    std::memset(&b, 0, sizeof b);
    b.d = d_h;
    b.dmin = dmin_h;
    for (int j = 0; j < 8; ++j) {
      sc[j] = static_cast<uint8_t>(CeilRatio(need_scale[j], d, 63));
      Q4KPackScaleMin(b.scales, j, sc[j], m[j]);
    }
    // Chunk c of 32 qs bytes: sub-block 2c in the low nibbles, 2c + 1 in
    // the high ones; Q5_K's fifth bits go to bit j of qh[l].
    for (int j = 0; j < 8; ++j) {
      const float dj = d * static_cast<float>(sc[j]);  // as the decoder does
      const float mj = dmin * static_cast<float>(m[j]);
      for (int l = 0; l < 32; ++l) {
        int q = 0;
        if (dj > 0.0f) {
          q = std::clamp(
              static_cast<int>(std::nearbyint((x[32 * j + l] + mj) / dj)), 0,
              kMaxQ);
        }
        b.qs[32 * (j / 2) + l] |=
            static_cast<uint8_t>((q & 0x0F) << (4 * (j % 2)));
        if constexpr (kBits == 5) {
          b.qh[l] |= static_cast<uint8_t>((q >> 4) << j);
        }
      }
    }
  }
}

// q6_K: x ~ (d * sc_g) * q, q in [-32, 31], per 16-element group g. The
// element of largest magnitude maps to -32 and the int8 scales round away
// from zero, so |x / step| <= 32 and only +32 ever clamps (to 31).
void QuantizeQ6K(const float* x, BlockQ6K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQkK) {
    float scale[16];
    float max_scale = 0.0f;
    for (int g = 0; g < 16; ++g) {
      float amax = 0.0f, max = 0.0f;
      for (int k = 16 * g; k < 16 * g + 16; ++k) {
        if (std::fabs(x[k]) > amax) {
          amax = std::fabs(x[k]);
          max = x[k];
        }
      }
      scale[g] = max / -32.0f;
      max_scale = std::max(max_scale, amax / 32.0f);
    }
    const uint16_t d_h = HalfCovering(max_scale, 127.0f);
    const float d = HalfToFloat(d_h);
    BlockQ6K& b = y[i];
    std::memset(&b, 0, sizeof b);
    b.d = d_h;
    for (int g = 0; g < 16; ++g) {
      const int mag = CeilRatio(std::fabs(scale[g]), d, 127);
      b.scales[g] = static_cast<int8_t>(scale[g] < 0.0f ? -mag : mag);
    }
    // Element e = 128h + 32k + l: low 4 bits in ql[64h + 32 (k % 2) + l]
    // (high nibble for k >= 2), top 2 bits at 2k of qh[32h + l]; its group
    // e / 16 is also its scale index.
    for (int e = 0; e < kQkK; ++e) {
      const float step = d * static_cast<float>(b.scales[e / 16]);
      int q = 0;
      if (step != 0.0f) {
        q = std::clamp(static_cast<int>(std::nearbyint(x[e] / step)), -32, 31);
      }
      const int u = q + 32;
      const int h = e / 128, k = (e % 128) / 32, l = e % 32;
      b.ql[64 * h + 32 * (k % 2) + l] |=
          static_cast<uint8_t>((u & 0x0F) << (k >= 2 ? 4 : 0));
      b.qh[32 * h + l] |= static_cast<uint8_t>((u >> 4) << (2 * k));
    }
  }
}

}  // namespace

void QuantizeBlockQ8K(const float* x, BlockQ8K* y) {
  float amax = 0.0f;
  float max = 0.0f;
  for (int j = 0; j < kQkK; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  if (amax == 0.0f) {
    std::memset(y, 0, sizeof *y);
    return;
  }
  const float iscale = -128.0f / max;
  for (int j = 0; j < kQkK; ++j) {
    // nearbyint rounds half to even, as ggml's nearest_int.
    const int v = static_cast<int>(std::nearbyint(iscale * x[j]));
    y->qs[j] = static_cast<int8_t>(std::min(127, v));
  }
  for (int g = 0; g < kQkK / 16; ++g) {
    int sum = 0;
    for (int k = 16 * g; k < 16 * g + 16; ++k) sum += y->qs[k];
    y->bsums[g] = static_cast<int16_t>(sum);
  }
  y->d = 1.0f / iscale;
}

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
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
    case GgmlType::kQ8_K:
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
    case GgmlType::kQ4_K:
      QuantizeKAffine<4>(src, static_cast<BlockQ4K*>(dst), nb);
      return;
    case GgmlType::kQ5_K:
      QuantizeKAffine<5>(src, static_cast<BlockQ5K*>(dst), nb);
      return;
    case GgmlType::kQ6_K:
      QuantizeQ6K(src, static_cast<BlockQ6K*>(dst), nb);
      return;
    case GgmlType::kQ8_K: {
      auto* y = static_cast<BlockQ8K*>(dst);
      for (int64_t i = 0; i < nb; ++i) QuantizeBlockQ8K(src + i * kQkK, y + i);
      return;
    }
    default:
      KVS_CHECK(false) << "unreachable";
  }
}

}  // namespace kvsession::kernels
