// Building blocks of the K-quant MatMul: Q4_K, Q5_K and Q6_K weights against
// Q8_K activations. A weight super-block is first decoded to a KUnpacked
// (unsigned values in element order, integer scales and mins per group of
// 16 elements), after which its dot with a Q8_K block a is
//   isum = sum_g sc[g] * sum_{k in g} q[k] * a.qs[k]
//   msum = sum_g mn[g] * a.bsums[g]
//   Q4_K/Q5_K: acc = fma(float(-msum), dmin * a.d, fma(float(isum),
//              d * a.d, acc))
//   Q6_K (q stored + 32, mn = 32 * sc): acc = fma(float(isum - msum),
//              d * a.d, acc)
// isum and msum are exact int32 sums (no int16 saturation: |q| <= 63,
// |a| <= 128, 2 * 63 * 128 < 2^15), so any summation order gives the same
// integers; the float step (KStep) is scalar code shared by every path, so
// the AVX2 build, the portable build and every tile shape agree bit for bit.
#ifndef KVSESSION_KERNELS_CPU_QDOT_K_H_
#define KVSESSION_KERNELS_CPU_QDOT_K_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/simd.h"

namespace kvsession::kernels::qdot_k {

inline constexpr int kGroups = kQkK / 16;  // 16-element groups
inline constexpr int kChunks = kQkK / 32;  // 32-byte vectors

struct alignas(32) KUnpacked {
  uint8_t q[kQkK];
  // sc[c][0..7] is the scale of group 2c, sc[c][8..15] that of 2c + 1: the
  // int16 lanes maddubs produces from the 32 elements of chunk c.
  int16_t sc[kChunks][16];
  int16_t mn[kGroups];
  float d;
  float dmin;  // unused by Q6_K
};

// Q6_K folds its min (the -32 offset) into the integer sum.
template <typename Block>
inline constexpr bool kIntMin = false;
template <>
inline constexpr bool kIntMin<BlockQ6K> = true;

struct KSums {
  int32_t isum;
  int32_t msum;
};

// The one float step of a super-block (see the header comment).
template <typename Block>
inline float KStep(const KUnpacked& w, float da, KSums s, float acc) {
  if constexpr (kIntMin<Block>) {
    return std::fma(static_cast<float>(s.isum - s.msum), w.d * da, acc);
  } else {
    acc = std::fma(static_cast<float>(s.isum), w.d * da, acc);
    return std::fma(static_cast<float>(-s.msum), w.dmin * da, acc);
  }
}

// Scales and mins of Q4_K/Q5_K: sub-block j (32 elements) is chunk j and
// groups 2j, 2j + 1.
inline void UnpackScalesQ4K(const uint8_t* scales, KUnpacked* u) {
  for (int j = 0; j < kChunks; ++j) {
    uint8_t sc, m;
    Q4KScaleMin(scales, j, &sc, &m);
    for (int l = 0; l < 16; ++l) u->sc[j][l] = sc;
    u->mn[2 * j] = m;
    u->mn[2 * j + 1] = m;
  }
}

#if KVS_CPU_AVX2

inline __m256i Load32(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}
inline void Store32(__m256i v, void* p) {
  _mm256_store_si256(static_cast<__m256i*>(p), v);
}

// Chunk c of 32 qs bytes: low nibbles are elements 64c + l, high nibbles
// 64c + 32 + l. Q5_K adds bit 2c (2c + 1) of qh[l] as bit 4.
template <bool kFifth>
inline void UnpackNibbles(const uint8_t* qs, const uint8_t* qh, uint8_t* q) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i one = _mm256_set1_epi8(1);
  __m256i h = kFifth ? Load32(qh) : _mm256_setzero_si256();
  for (int c = 0; c < 4; ++c) {
    const __m256i v = Load32(qs + 32 * c);
    __m256i lo = _mm256_and_si256(v, m4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    if constexpr (kFifth) {
      lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
      hi = _mm256_or_si256(
          hi,
          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 1), one), 4));
      h = _mm256_srli_epi16(h, 2);
    }
    Store32(lo, q + 64 * c);
    Store32(hi, q + 64 * c + 32);
  }
}

inline void UnpackQ6(const uint8_t* ql, const uint8_t* qh, uint8_t* q) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i m2 = _mm256_set1_epi8(0x03);
  for (int half = 0; half < 2; ++half, ql += 64, qh += 32, q += 128) {
    const __m256i a = Load32(ql);
    const __m256i b = Load32(ql + 32);
    const __m256i h = Load32(qh);
    auto top = [&](int shift) {
      return _mm256_slli_epi16(
          _mm256_and_si256(_mm256_srli_epi16(h, shift), m2), 4);
    };
    Store32(_mm256_or_si256(_mm256_and_si256(a, m4), top(0)), q);
    Store32(_mm256_or_si256(_mm256_and_si256(b, m4), top(2)), q + 32);
    Store32(
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), m4), top(4)),
        q + 64);
    Store32(
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), m4), top(6)),
        q + 96);
  }
}

// Sum of the 8 lanes of a and of b (exact integers: order is free).
inline KSums Hsum2(__m256i a, __m256i b) {
  const __m256i h = _mm256_hadd_epi32(a, b);
  __m128i s =
      _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  s = _mm_hadd_epi32(s, s);
  return {_mm_cvtsi128_si32(s), _mm_extract_epi32(s, 1)};
}

// sums[r * T + t] of rows w[r * w_stride] and tokens a[t * a_stride].
template <int R, int T>
inline void Sums(const KUnpacked* w, int64_t w_stride, const BlockQ8K* a,
                 int64_t a_stride, KSums* sums) {
  __m256i acc[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_si256();
  }
#pragma GCC unroll 8
  for (int c = 0; c < kChunks; ++c) {
    __m256i av[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) av[t] = Load32(a[t * a_stride].qs + 32 * c);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const KUnpacked& u = w[r * w_stride];
      const __m256i wq =
          _mm256_load_si256(reinterpret_cast<const __m256i*>(u.q + 32 * c));
      const __m256i ws =
          _mm256_load_si256(reinterpret_cast<const __m256i*>(u.sc[c]));
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        acc[r][t] = _mm256_add_epi32(
            acc[r][t], _mm256_madd_epi16(_mm256_maddubs_epi16(wq, av[t]), ws));
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const __m256i mn =
        _mm256_load_si256(reinterpret_cast<const __m256i*>(w[r * w_stride].mn));
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      sums[r * T + t] = Hsum2(
          acc[r][t], _mm256_madd_epi16(Load32(a[t * a_stride].bsums), mn));
    }
  }
}

#else  // portable: the same integers, one element at a time

template <bool kFifth>
inline void UnpackNibbles(const uint8_t* qs, const uint8_t* qh, uint8_t* q) {
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t v = qs[32 * c + l];
      int lo = v & 0x0F;
      int hi = v >> 4;
      if constexpr (kFifth) {
        lo |= ((qh[l] >> (2 * c)) & 1) << 4;
        hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
      }
      q[64 * c + l] = static_cast<uint8_t>(lo);
      q[64 * c + 32 + l] = static_cast<uint8_t>(hi);
    }
  }
}

inline void UnpackQ6(const uint8_t* ql, const uint8_t* qh, uint8_t* q) {
  for (int half = 0; half < 2; ++half, ql += 64, qh += 32, q += 128) {
    for (int l = 0; l < 32; ++l) {
      q[l] = static_cast<uint8_t>((ql[l] & 0x0F) | ((qh[l] & 3) << 4));
      q[l + 32] =
          static_cast<uint8_t>((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4));
      q[l + 64] =
          static_cast<uint8_t>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
      q[l + 96] =
          static_cast<uint8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
    }
  }
}

template <int R, int T>
inline void Sums(const KUnpacked* w, int64_t w_stride, const BlockQ8K* a,
                 int64_t a_stride, KSums* sums) {
  for (int r = 0; r < R; ++r) {
    const KUnpacked& u = w[r * w_stride];
    for (int t = 0; t < T; ++t) {
      const BlockQ8K& x = a[t * a_stride];
      int32_t isum = 0, msum = 0;
      for (int g = 0; g < kGroups; ++g) {
        int32_t dot = 0;
        for (int k = 16 * g; k < 16 * g + 16; ++k) {
          dot += int32_t{u.q[k]} * int32_t{x.qs[k]};
        }
        isum += int32_t{u.sc[g / 2][8 * (g % 2)]} * dot;
        msum += int32_t{u.mn[g]} * int32_t{x.bsums[g]};
      }
      sums[r * T + t] = {isum, msum};
    }
  }
}

#endif  // KVS_CPU_AVX2

inline void Unpack(const BlockQ4K& x, KUnpacked* u) {
  UnpackNibbles<false>(x.qs, nullptr, u->q);
  UnpackScalesQ4K(x.scales, u);
  u->d = simd::F16ToF32(x.d);
  u->dmin = simd::F16ToF32(x.dmin);
}

inline void Unpack(const BlockQ5K& x, KUnpacked* u) {
  UnpackNibbles<true>(x.qs, x.qh, u->q);
  UnpackScalesQ4K(x.scales, u);
  u->d = simd::F16ToF32(x.d);
  u->dmin = simd::F16ToF32(x.dmin);
}

// Q6_K's scale index of element e is e / 16: groups are in element order.
inline void Unpack(const BlockQ6K& x, KUnpacked* u) {
  UnpackQ6(x.ql, x.qh, u->q);
  for (int g = 0; g < kGroups; ++g) {
    for (int l = 0; l < 8; ++l) u->sc[g / 2][8 * (g % 2) + l] = x.scales[g];
    u->mn[g] = static_cast<int16_t>(32 * x.scales[g]);
  }
  u->d = simd::F16ToF32(x.d);
  u->dmin = 0.0f;
}

}  // namespace kvsession::kernels::qdot_k

#endif  // KVSESSION_KERNELS_CPU_QDOT_K_H_
