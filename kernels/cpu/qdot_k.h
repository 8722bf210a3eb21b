// Building blocks of the K-quant MatMul: Q4_K, Q5_K and Q6_K weights against
// Q8_K activations. For prefill a weight super-block is first decoded to a
// KUnpacked (unsigned values in element order, integer scales and mins per
// group of 16 elements); decode uses FusedSums, which computes the same
// integers from the packed bits in registers. The dot with a Q8_K block a is
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
#include <type_traits>

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

// The one float step of a super-block (see the header comment); d and dmin
// are the weight block's f16 fields as f32 (dmin unused by Q6_K).
template <typename Block>
inline float KStep(float d, float dmin, float da, KSums s, float acc) {
  if constexpr (kIntMin<Block>) {
    return std::fma(static_cast<float>(s.isum - s.msum), d * da, acc);
  } else {
    acc = std::fma(static_cast<float>(s.isum), d * da, acc);
    return std::fma(static_cast<float>(-s.msum), dmin * da, acc);
  }
}
template <typename Block>
inline float KStep(const KUnpacked& w, float da, KSums s, float acc) {
  return KStep<Block>(w.d, w.dmin, da, s, acc);
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

// ---- Fused decode: no KUnpacked ----
//
// FusedSums<Block, R, T>(w, w_stride, a, a_stride, sums) computes the sums
// of the super-blocks w + r * w_stride (bytes, r < R) against a[t * a_stride]
// (t < T) straight from the packed bits, each decoded weight vector shared
// by the T tokens in registers: exactly the int32 isum and msum that Sums
// computes from Unpack (only the evaluation order of exact integer sums
// differs), so KStep gives the same bits. Q6_K returns {isum - msum, 0},
// folded in the vector before the horizontal sum: the same int32 (|isum| <=
// 256 * 63 * 128 * 128 < 2^29, |msum| <= 16 * 32 * 128 * 2048 < 2^28, no
// overflow), which KStep turns into the same float. Saturation: maddubs sees
// unsigned q <= 63 (the unpacked values, never q - 32) times int8 a, so each
// int16 pair sum is <= 2 * 63 * 128 < 2^15, as in Sums.

inline float BlockD(const BlockQ4K& x) { return simd::F16ToF32(x.d); }
inline float BlockD(const BlockQ5K& x) { return simd::F16ToF32(x.d); }
inline float BlockD(const BlockQ6K& x) { return simd::F16ToF32(x.d); }
inline float BlockDmin(const BlockQ4K& x) { return simd::F16ToF32(x.dmin); }
inline float BlockDmin(const BlockQ5K& x) { return simd::F16ToF32(x.dmin); }
inline float BlockDmin(const BlockQ6K&) { return 0.0f; }

#if KVS_CPU_AVX2

// Horizontal sums of v[0..N) (N <= 8) into out[0..N); exact integers.
template <int N>
inline void HsumN(const __m256i* v, int32_t* out) {
  static_assert(N >= 1 && N <= 8);
  const __m256i z = _mm256_setzero_si256();
  auto at = [&](int i) { return i < N ? v[i] : z; };
  if constexpr (N <= 2) {
    const KSums s = Hsum2(at(0), at(1));
    out[0] = s.isum;
    if constexpr (N == 2) out[1] = s.msum;
  } else if constexpr (N <= 4) {
    const __m256i x = _mm256_hadd_epi32(_mm256_hadd_epi32(at(0), at(1)),
                                        _mm256_hadd_epi32(at(2), at(3)));
    const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(x),
                                    _mm256_extracti128_si256(x, 1));
    alignas(16) int32_t tmp[4];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), s);
    for (int i = 0; i < N; ++i) out[i] = tmp[i];
  } else {
    const __m256i x = _mm256_hadd_epi32(_mm256_hadd_epi32(at(0), at(1)),
                                        _mm256_hadd_epi32(at(2), at(3)));
    const __m256i y = _mm256_hadd_epi32(_mm256_hadd_epi32(at(4), at(5)),
                                        _mm256_hadd_epi32(at(6), at(7)));
    const __m256i s = _mm256_add_epi32(_mm256_permute2x128_si256(x, y, 0x20),
                                       _mm256_permute2x128_si256(x, y, 0x31));
    alignas(32) int32_t tmp[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), s);
    for (int i = 0; i < N; ++i) out[i] = tmp[i];
  }
}

// HsumN over any count, 8 at a time.
template <int N>
inline void HsumAll(const __m256i* v, int32_t* out) {
  if constexpr (N > 8) {
    HsumN<8>(v, out);
    HsumAll<N - 8>(v + 8, out + 8);
  } else {
    HsumN<N>(v, out);
  }
}

// The 6-bit scales and mins of a Q4_K/Q5_K super-block (the bytes as
// Q4KScaleMin reads them): sc2[j] = scale j in both int16 halves (a 32-bit
// broadcast gives the 16 lanes of sub-block j), *mn2 = the min of group g
// (sub-block g / 2) in int16 lane g.
inline void ScalesMinsQ4K(const uint8_t* s, uint32_t sc2[8], __m256i* mn2) {
  uint32_t u[3];
  std::memcpy(u, s, 12);
  constexpr uint32_t k6 = 0x3F3F3F3F, k4 = 0x0F0F0F0F, k2 = 0x03030303;
  // Sub-blocks 0-3: low 6 bits of bytes 0-3 (scales), 4-7 (mins); 4-7: low
  // (scales) and high (mins) nibbles of bytes 8-11, bits 4-5 from the top 2
  // bits of bytes 0-3 (scales) and 4-7 (mins).
  const uint64_t sc =
      (u[0] & k6) | uint64_t{(u[2] & k4) | (((u[0] >> 6) & k2) << 4)} << 32;
  const uint64_t mn =
      (u[1] & k6) | uint64_t{((u[2] >> 4) & k4) | (((u[1] >> 6) & k2) << 4)}
                        << 32;
  // v: int16 [sc0..7 | mn0..7]; lo, hi: each lane doubled.
  const __m256i v = _mm256_cvtepu8_epi16(
      _mm_set_epi64x(static_cast<int64_t>(mn), static_cast<int64_t>(sc)));
  const __m256i lo = _mm256_unpacklo_epi16(v, v);  // sc0-3 | mn0-3
  const __m256i hi = _mm256_unpackhi_epi16(v, v);  // sc4-7 | mn4-7
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(sc2),
                      _mm256_permute2x128_si256(lo, hi, 0x20));
  *mn2 = _mm256_permute2x128_si256(lo, hi, 0x31);
}

// sc2 (two int16 copies of a scale) in all 8 int32 lanes, as a load.
inline __m256i Broadcast32(const uint32_t* sc2) {
  return _mm256_castps_si256(
      _mm256_broadcast_ss(reinterpret_cast<const float*>(sc2)));
}

// Int16 lane k of both halves of v broadcast to all 16 lanes.
inline __m256i BroadcastLane16(__m256i v, int k) {
  return _mm256_shuffle_epi8(
      v, _mm256_set1_epi16(static_cast<int16_t>(((2 * k + 1) << 8) | (2 * k))));
}

template <typename Block, int R, int T>
inline void FusedSumsQ45(const uint8_t* w, int64_t w_stride, const BlockQ8K* a,
                         int64_t a_stride, KSums* sums) {
  constexpr bool kFifth = std::is_same_v<Block, BlockQ5K>;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i b4 = _mm256_set1_epi8(0x10);
  const Block* x[R];
  alignas(32) uint32_t sc2[R][8];
  __m256i mn2[R], acc[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    x[r] = reinterpret_cast<const Block*>(w + r * w_stride);
    ScalesMinsQ4K(x[r]->scales, sc2[r], &mn2[r]);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_si256();
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    __m256i lo[R], hi[R], slo[R], shi[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      // Sub-block 2j: low nibbles; 2j + 1: high nibbles (+ bits 2j, 2j + 1
      // of qh for Q5_K).
      const __m256i q = Load32(x[r]->qs + 32 * j);
      lo[r] = _mm256_and_si256(q, m4);
      hi[r] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (kFifth) {
        const __m256i h = _mm256_srli_epi16(Load32(x[r]->qh), 2 * j);
        lo[r] = _mm256_or_si256(lo[r],
                                _mm256_and_si256(_mm256_slli_epi16(h, 4), b4));
        hi[r] = _mm256_or_si256(hi[r],
                                _mm256_and_si256(_mm256_slli_epi16(h, 3), b4));
      }
      slo[r] = Broadcast32(&sc2[r][2 * j]);
      shi[r] = Broadcast32(&sc2[r][2 * j + 1]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const __m256i al = Load32(a[t * a_stride].qs + 64 * j);
      const __m256i ah = Load32(a[t * a_stride].qs + 64 * j + 32);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m256i pl =
            _mm256_madd_epi16(_mm256_maddubs_epi16(lo[r], al), slo[r]);
        const __m256i ph =
            _mm256_madd_epi16(_mm256_maddubs_epi16(hi[r], ah), shi[r]);
        acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_add_epi32(pl, ph));
      }
    }
  }
  // v = [isum vectors of (r, t) | msum vectors of (r, t)].
  __m256i v[2 * R * T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      v[r * T + t] = acc[r][t];
      v[R * T + r * T + t] =
          _mm256_madd_epi16(Load32(a[t * a_stride].bsums), mn2[r]);
    }
  }
  int32_t out[2 * R * T];
  HsumAll<2 * R * T>(v, out);
  for (int i = 0; i < R * T; ++i) sums[i] = {out[i], out[R * T + i]};
}

template <int R, int T>
inline void FusedSumsQ6(const uint8_t* w, int64_t w_stride, const BlockQ8K* a,
                        int64_t a_stride, KSums* sums) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i m30 = _mm256_set1_epi8(0x30);
  // Scale of group 2c in int16 lane c of the low half, of 2c + 1 in lane c
  // of the high half: one in-lane shuffle gives chunk c's 16 lanes.
  const __m128i even_odd =
      _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  const BlockQ6K* x[R];
  __m256i sc[R], acc[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    x[r] = reinterpret_cast<const BlockQ6K*>(w + r * w_stride);
    sc[r] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[r]->scales)),
        even_odd));
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_si256();
  }
#pragma GCC unroll 2
  for (int half = 0; half < 2; ++half) {
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const int c = 4 * half + k;  // chunk: elements 32c .. 32c + 31
      __m256i q[R], s[R];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        // Low 4 bits: ql[64 half + 32 (k % 2) + l], high nibble for k >= 2;
        // top 2 bits: bits 2k, 2k + 1 of qh[32 half + l], moved to 4-5.
        const __m256i l = Load32(x[r]->ql + 64 * half + 32 * (k % 2));
        const __m256i h = Load32(x[r]->qh + 32 * half);
        const __m256i low =
            _mm256_and_si256(k >= 2 ? _mm256_srli_epi16(l, 4) : l, m4);
        __m256i top;
        if (k == 0)
          top = _mm256_slli_epi16(h, 4);
        else if (k == 1)
          top = _mm256_slli_epi16(h, 2);
        else if (k == 2)
          top = h;
        else
          top = _mm256_srli_epi16(h, 2);
        q[r] = _mm256_or_si256(low, _mm256_and_si256(top, m30));
        s[r] = BroadcastLane16(sc[r], c);
      }
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const __m256i av = Load32(a[t * a_stride].qs + 32 * c);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          acc[r][t] = _mm256_add_epi32(
              acc[r][t],
              _mm256_madd_epi16(_mm256_maddubs_epi16(q[r], av), s[r]));
        }
      }
    }
  }
  // msum = 32 * sum_g sc[g] * bsums[g], subtracted lane by lane.
  __m256i v[R * T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[r]->scales)));
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      v[r * T + t] = _mm256_sub_epi32(
          acc[r][t],
          _mm256_slli_epi32(
              _mm256_madd_epi16(Load32(a[t * a_stride].bsums), sc16), 5));
    }
  }
  int32_t out[R * T];
  HsumAll<R * T>(v, out);
  for (int i = 0; i < R * T; ++i) sums[i] = {out[i], 0};
}

template <typename Block, int R, int T>
inline void FusedSums(const uint8_t* w, int64_t w_stride, const BlockQ8K* a,
                      int64_t a_stride, KSums* sums) {
  if constexpr (std::is_same_v<Block, BlockQ6K>) {
    FusedSumsQ6<R, T>(w, w_stride, a, a_stride, sums);
  } else {
    FusedSumsQ45<Block, R, T>(w, w_stride, a, a_stride, sums);
  }
}

#else  // portable: unpack one block at a time (the same integers)

template <typename Block, int R, int T>
inline void FusedSums(const uint8_t* w, int64_t w_stride, const BlockQ8K* a,
                      int64_t a_stride, KSums* sums) {
  KUnpacked u;
  for (int r = 0; r < R; ++r) {
    Unpack(*reinterpret_cast<const Block*>(w + r * w_stride), &u);
    Sums<1, T>(&u, 0, a, a_stride, sums + r * T);
    if constexpr (kIntMin<Block>) {
      for (int t = 0; t < T; ++t) {
        KSums& s = sums[r * T + t];
        s = {s.isum - s.msum, 0};
      }
    }
  }
}

#endif  // KVS_CPU_AVX2

}  // namespace kvsession::kernels::qdot_k

#endif  // KVSESSION_KERNELS_CPU_QDOT_K_H_
