// SIMD building blocks with a fixed float operation order. Every reduction
// here uses 8 lanes (lane i takes elements i, i+8, ...) and one horizontal-sum
// order, in the AVX2 and in the portable path alike, so a value never depends
// on which path or which caller computed it.
#ifndef KVSESSION_KERNELS_CPU_SIMD_H_
#define KVSESSION_KERNELS_CPU_SIMD_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/f16.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KVS_CPU_AVX2 1
#include <immintrin.h>
#else
#define KVS_CPU_AVX2 0
#endif

namespace kvsession::kernels::simd {

inline constexpr int kLanes = 8;

// HalfToFloat, inlined where F16C exists (bit-identical: both are exact).
inline float F16ToF32(uint16_t h) {
#if KVS_CPU_AVX2
  return _cvtsh_ss(h);
#else
  return HalfToFloat(h);
#endif
}

// The horizontal sum order of Hsum8: (l0+l4 + l2+l6) + (l1+l5 + l3+l7).
inline float HsumLanes(const float* l) {
  const float r0 = l[0] + l[4];
  const float r1 = l[1] + l[5];
  const float r2 = l[2] + l[6];
  const float r3 = l[3] + l[7];
  return (r0 + r2) + (r1 + r3);
}

// exp(x) on [-87, 88] (clamped outside): Cody-Waite reduction and a degree-5
// polynomial, ~1 ulp. Written once with fma so the scalar and vector forms
// round identically (libm's expf would not match a vector version).
inline constexpr float kExpLo = -87.0f;
inline constexpr float kExpHi = 88.0f;
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2Hi = 0.693359375f;
inline constexpr float kLn2Lo = -2.12194440e-4f;
inline constexpr float kExpP0 = 1.9875691500e-4f;
inline constexpr float kExpP1 = 1.3981999507e-3f;
inline constexpr float kExpP2 = 8.3334519073e-3f;
inline constexpr float kExpP3 = 4.1665795894e-2f;
inline constexpr float kExpP4 = 1.6666665459e-1f;
inline constexpr float kExpP5 = 5.0000001201e-1f;

inline float ExpScalar(float x) {
  x = x < kExpHi ? x : kExpHi;  // same NaN handling as _mm256_min_ps
  x = x > kExpLo ? x : kExpLo;
  const float n = std::nearbyint(x * kLog2e);
  float r = std::fma(-n, kLn2Hi, x);
  r = std::fma(-n, kLn2Lo, r);
  const float z = r * r;
  float p = kExpP0;
  p = std::fma(p, r, kExpP1);
  p = std::fma(p, r, kExpP2);
  p = std::fma(p, r, kExpP3);
  p = std::fma(p, r, kExpP4);
  p = std::fma(p, r, kExpP5);
  float y = std::fma(p, z, r);
  y = y + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127)
                        << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

#if KVS_CPU_AVX2

inline float Hsum8(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

inline __m256 Exp8(__m256 x) {
  x = _mm256_min_ps(x, _mm256_set1_ps(kExpHi));
  x = _mm256_max_ps(x, _mm256_set1_ps(kExpLo));
  const __m256 n =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  const __m256 z = _mm256_mul_ps(r, r);
  __m256 p = _mm256_set1_ps(kExpP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP5));
  __m256 y = _mm256_fmadd_ps(p, z, r);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// Lanes [0, n) set, n in [0, 8].
inline __m256i TailMask(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), idx);
}

inline __m256 LoadF16x8(const uint16_t* h) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
}

#endif  // KVS_CPU_AVX2

// dot(a, b) over n floats: lanes accumulate by fma, the n % 8 tail enters
// lanes 0..n%8-1 as one last (zero-padded) step, then HsumLanes.
inline float DotF32(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
#if KVS_CPU_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + kLanes <= n; i += kLanes) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  }
  if (i < n) {
    const __m256i m = TailMask(n - i);
    acc = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m),
                          _mm256_maskload_ps(b + i, m), acc);
  }
  return Hsum8(acc);
#else
  float l[kLanes] = {};
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) l[j] = std::fma(a[i + j], b[i + j], l[j]);
  }
  if (i < n) {
    for (int j = 0; j < kLanes; ++j) {
      const bool in = i + j < n;
      l[j] = std::fma(in ? a[i + j] : 0.0f, in ? b[i + j] : 0.0f, l[j]);
    }
  }
  return HsumLanes(l);
#endif
}

// dot(a, f16 h) over n elements, same order as DotF32.
inline float DotF32F16(const float* a, const uint16_t* h, int64_t n) {
  int64_t i = 0;
#if KVS_CPU_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + kLanes <= n; i += kLanes) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), LoadF16x8(h + i), acc);
  }
  if (i < n) {
    uint16_t tail[kLanes] = {};
    std::memcpy(tail, h + i, static_cast<size_t>(n - i) * sizeof(uint16_t));
    acc = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, TailMask(n - i)),
                          LoadF16x8(tail), acc);
  }
  return Hsum8(acc);
#else
  float l[kLanes] = {};
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      l[j] = std::fma(a[i + j], HalfToFloat(h[i + j]), l[j]);
    }
  }
  if (i < n) {
    for (int j = 0; j < kLanes; ++j) {
      const bool in = i + j < n;
      l[j] = std::fma(in ? a[i + j] : 0.0f, in ? HalfToFloat(h[i + j]) : 0.0f,
                      l[j]);
    }
  }
  return HsumLanes(l);
#endif
}

// out[i] = DotF32F16(a, h + i * stride, n) for i < 4, bit for bit: four
// independent accumulators only so their fma latency chains overlap.
inline void DotF32F16x4(const float* a, const uint16_t* h, int64_t stride,
                        int64_t n, float* out) {
#if KVS_CPU_AVX2
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256 av = _mm256_loadu_ps(a + i);
    for (int r = 0; r < 4; ++r) {
      acc[r] = _mm256_fmadd_ps(av, LoadF16x8(h + r * stride + i), acc[r]);
    }
  }
  if (i < n) {
    const __m256 av = _mm256_maskload_ps(a + i, TailMask(n - i));
    for (int r = 0; r < 4; ++r) {
      uint16_t tail[kLanes] = {};
      std::memcpy(tail, h + r * stride + i,
                  static_cast<size_t>(n - i) * sizeof(uint16_t));
      acc[r] = _mm256_fmadd_ps(av, LoadF16x8(tail), acc[r]);
    }
  }
  for (int r = 0; r < 4; ++r) out[r] = Hsum8(acc[r]);
#else
  for (int r = 0; r < 4; ++r) out[r] = DotF32F16(a, h + r * stride, n);
#endif
}

// Sum of n floats, same lane order as DotF32.
inline float SumF32(const float* a, int64_t n) {
  int64_t i = 0;
#if KVS_CPU_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + kLanes <= n; i += kLanes) {
    acc = _mm256_add_ps(acc, _mm256_loadu_ps(a + i));
  }
  if (i < n) {
    acc = _mm256_add_ps(acc, _mm256_maskload_ps(a + i, TailMask(n - i)));
  }
  return Hsum8(acc);
#else
  float l[kLanes] = {};
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) l[j] = l[j] + a[i + j];
  }
  if (i < n) {
    for (int j = 0; j < kLanes; ++j)
      l[j] = l[j] + (i + j < n ? a[i + j] : 0.0f);
  }
  return HsumLanes(l);
#endif
}

// dst[i] = f16(src[i]), round to nearest even.
inline void StoreF16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
#if KVS_CPU_AVX2
  for (; i + kLanes <= n; i += kLanes) {
    _mm_storeu_si128(
        reinterpret_cast<__m128i*>(dst + i),
        _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  }
#endif
  for (; i < n; ++i) dst[i] = FloatToHalf(src[i]);
}

}  // namespace kvsession::kernels::simd

#endif  // KVSESSION_KERNELS_CPU_SIMD_H_
