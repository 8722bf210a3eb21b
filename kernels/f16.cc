#include "kernels/f16.h"

#include <cstdint>
#include <cstring>

#include "kernels/f16_internal.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace kvsession::kernels {
namespace {

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace

namespace internal {

float HalfToFloatPortable(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in f32.
    const float mag = static_cast<float>(mant) * 0x1p-24f;
    return BitsFloat(sign | FloatBits(mag));
  }
  if (exp == 0x1F) {
    // Inf or NaN; like F16C a signalling NaN comes back quiet.
    return BitsFloat(sign | 0x7F800000u | (mant << 13) |
                     (mant != 0 ? 0x00400000u : 0u));
  }
  return BitsFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t FloatToHalfPortable(float f) {
  const uint32_t u = FloatBits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) {
    // NaN: keep the top payload bits and set the quiet bit, as F16C does.
    return static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  }
  if (a >= 0x477FF000u) {
    // >= 65520 (halfway between the largest half and 2^16) rounds to inf.
    return static_cast<uint16_t>(sign | 0x7C00u);
  }
  if (a < 0x38800000u) {
    // Below the smallest normal half: adding 0.5 puts the value's bits at
    // the half-subnormal ulp (2^-24) and the f32 add rounds to nearest even.
    const uint32_t r = FloatBits(BitsFloat(a) + 0.5f) - 0x3F000000u;
    return static_cast<uint16_t>(sign | r);
  }
  // Normal: rebias the exponent and round the 13 dropped bits to even.
  const uint32_t odd = (a >> 13) & 1u;
  a += 0xC8000FFFu + odd;  // (15 - 127) << 23, plus half an ulp minus one
  return static_cast<uint16_t>(sign | (a >> 13));
}

}  // namespace internal

float HalfToFloat(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return internal::HalfToFloatPortable(h);
#endif
}

uint16_t FloatToHalf(float f) {
#if defined(__F16C__)
  return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
  return internal::FloatToHalfPortable(f);
#endif
}

uint16_t FloatToBf16(float f) {
  const uint32_t u = FloatBits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
    return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN stays quiet NaN
  }
  return static_cast<uint16_t>((u + (0x7FFFu + ((u >> 16) & 1u))) >> 16);
}

}  // namespace kvsession::kernels
