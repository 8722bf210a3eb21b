// Building blocks of the quantized MatMul: decoding one 32-element weight
// block to int8 values in element order, and the per-block accumulation step
//   acc = fma(float(lane sums of w * a), d_w * d_a, acc)
// where lane i (of 8) holds the integer dot of elements 4i..4i+3. Every
// MatMul code path (tiles of any shape, the fused small-batch path, the
// portable build) performs exactly this step per block, so an output's value
// never depends on the path. Integer lane sums are exact (no int16
// saturation: |w| <= 128, |a| <= 127, 2 * 128 * 127 < 2^15).
#ifndef KVSESSION_KERNELS_CPU_QDOT_H_
#define KVSESSION_KERNELS_CPU_QDOT_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/simd.h"

namespace kvsession::kernels::qdot {

#if KVS_CPU_AVX2

using Vals = __m256i;  // 32 int8 (or uint8 for affine types)
using Acc = __m256;
using Scale = __m256;  // d_w * d_a in every lane

inline Acc Zero() { return _mm256_setzero_ps(); }
inline Vals Load(const int8_t* q) {
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(q));
}
inline void Store(Vals v, int8_t* q) {
  _mm256_store_si256(reinterpret_cast<__m256i*>(q), v);
}
inline Scale MulScales(float dw, float da) {
  return _mm256_mul_ps(_mm256_set1_ps(dw), _mm256_set1_ps(da));
}

// maddubs multiplies unsigned x signed bytes: signed weights hand it |w| and
// move their sign onto the activation.
struct Prepared {
  __m256i u;  // |w| (w itself for affine types)
  __m256i s;  // sign source
};
template <bool kSignedW>
inline Prepared Prepare(Vals w) {
  return kSignedW ? Prepared{_mm256_sign_epi8(w, w), w} : Prepared{w, w};
}
template <bool kSignedW>
inline Acc Step(const Prepared& w, Vals a, Scale dd, Acc acc) {
  if (kSignedW) a = _mm256_sign_epi8(a, w.s);
  const __m256i sum4 =
      _mm256_madd_epi16(_mm256_maddubs_epi16(w.u, a), _mm256_set1_epi16(1));
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum4), dd, acc);
}
inline float Reduce(Acc acc) { return simd::Hsum8(acc); }

// Low nibbles to bytes 0-15, high nibbles to bytes 16-31: the 16 bytes go to
// both halves and only the upper half is shifted (per 32-bit lane; the bits
// that cross into a neighbouring byte are masked off).
inline __m256i Nibbles(const uint8_t* qs) {
  const __m256i both = _mm256_broadcastsi128_si256(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  const __m256i shifted =
      _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
  return _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F));
}
// 0x10 in byte j where bit j of qh is set.
inline __m256i FifthBits(const uint8_t* qh_bytes) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, sizeof qh);
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(qh)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                        0x0101010101010101, 0x0000000000000000));
  const __m256i bit =
      _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}
inline Vals Decode(const BlockQ4_0& x) {
  return _mm256_sub_epi8(Nibbles(x.qs), _mm256_set1_epi8(8));
}
inline Vals Decode(const BlockQ4_1& x) { return Nibbles(x.qs); }
inline Vals Decode(const BlockQ5_0& x) {
  return _mm256_sub_epi8(_mm256_or_si256(Nibbles(x.qs), FifthBits(x.qh)),
                         _mm256_set1_epi8(16));
}
inline Vals Decode(const BlockQ5_1& x) {
  return _mm256_or_si256(Nibbles(x.qs), FifthBits(x.qh));
}
inline Vals Decode(const BlockQ8_0& x) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs));
}

#else  // portable: the same lane layout and float operations, one at a time

struct Vals {
  int8_t v[kQk];
};
struct Acc {
  float l[simd::kLanes];
};
using Scale = float;

inline Acc Zero() { return Acc{}; }
inline Vals Load(const int8_t* q) {
  Vals v;
  std::memcpy(v.v, q, kQk);
  return v;
}
inline void Store(const Vals& v, int8_t* q) { std::memcpy(q, v.v, kQk); }
inline Scale MulScales(float dw, float da) { return dw * da; }

using Prepared = Vals;
template <bool kSignedW>
inline Prepared Prepare(const Vals& w) {
  return w;
}
template <bool kSignedW>
inline Acc Step(const Prepared& w, const Vals& a, Scale dd, Acc acc) {
  for (int l = 0; l < simd::kLanes; ++l) {
    int s = 0;
    for (int k = 4 * l; k < 4 * l + 4; ++k) s += int{w.v[k]} * int{a.v[k]};
    acc.l[l] = std::fma(static_cast<float>(s), dd, acc.l[l]);
  }
  return acc;
}
inline float Reduce(const Acc& acc) { return simd::HsumLanes(acc.l); }

inline Vals Nibbles(const uint8_t* qs, int8_t sub) {
  Vals v;
  for (int j = 0; j < kQk / 2; ++j) {
    v.v[j] = static_cast<int8_t>((qs[j] & 0x0F) - sub);
    v.v[j + kQk / 2] = static_cast<int8_t>((qs[j] >> 4) - sub);
  }
  return v;
}
inline Vals AddFifthBits(Vals v, const uint8_t* qh_bytes, int8_t sub) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, sizeof qh);
  for (int j = 0; j < kQk; ++j) {
    v.v[j] = static_cast<int8_t>((v.v[j] | (((qh >> j) & 1) << 4)) - sub);
  }
  return v;
}
inline Vals Decode(const BlockQ4_0& x) { return Nibbles(x.qs, 8); }
inline Vals Decode(const BlockQ4_1& x) { return Nibbles(x.qs, 0); }
inline Vals Decode(const BlockQ5_0& x) {
  return AddFifthBits(Nibbles(x.qs, 0), x.qh, 16);
}
inline Vals Decode(const BlockQ5_1& x) {
  return AddFifthBits(Nibbles(x.qs, 0), x.qh, 0);
}
inline Vals Decode(const BlockQ8_0& x) {
  Vals v;
  std::memcpy(v.v, x.qs, kQk);
  return v;
}

#endif  // KVS_CPU_AVX2

// Affine types (unsigned values, d and min) meet Q8_1 activations; the others
// (signed values, d) meet Q8_0 activations.
template <typename Block>
inline constexpr bool kAffine = false;
template <>
inline constexpr bool kAffine<BlockQ4_1> = true;
template <>
inline constexpr bool kAffine<BlockQ5_1> = true;

template <typename Block>
inline float Min(const Block& x) {
  if constexpr (kAffine<Block>) {
    return simd::F16ToF32(x.m);
  } else {
    return 0.0f;
  }
}

// Scale and min of a block (affine types keep d and m adjacent: one
// conversion for both).
template <typename Block>
inline void ScaleMin(const Block& x, float* d, float* m) {
#if KVS_CPU_AVX2
  if constexpr (kAffine<Block>) {
    static_assert(offsetof(Block, m) == offsetof(Block, d) + 2);
    int32_t dm_bits;
    std::memcpy(&dm_bits, &x.d, sizeof dm_bits);
    const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(dm_bits));
    *d = _mm_cvtss_f32(dm);
    *m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
    return;
  }
#endif
  *d = simd::F16ToF32(x.d);
  *m = Min(x);
}

}  // namespace kvsession::kernels::qdot

#endif  // KVSESSION_KERNELS_CPU_QDOT_H_
