// IEEE binary16 and bfloat16 conversions, round to nearest even. The portable
// and F16C paths give identical bits, so KV written on any build reads back
// the same.
#ifndef KVSESSION_KERNELS_F16_H_
#define KVSESSION_KERNELS_F16_H_

#include <cstdint>
#include <cstring>

namespace kvsession::kernels {

float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);

inline float Bf16ToFloat(uint16_t h) {
  uint32_t bits = uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t FloatToBf16(float f);

}  // namespace kvsession::kernels

#endif  // KVSESSION_KERNELS_F16_H_
