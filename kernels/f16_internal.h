// The portable f16 conversions behind HalfToFloat/FloatToHalf, exposed so
// tests can compare them bit for bit with the F16C instructions.
#ifndef KVSESSION_KERNELS_F16_INTERNAL_H_
#define KVSESSION_KERNELS_F16_INTERNAL_H_

#include <cstdint>

namespace kvsession::kernels::internal {

float HalfToFloatPortable(uint16_t h);
uint16_t FloatToHalfPortable(float f);

}  // namespace kvsession::kernels::internal

#endif  // KVSESSION_KERNELS_F16_INTERNAL_H_
