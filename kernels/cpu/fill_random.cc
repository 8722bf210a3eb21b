#include <cstdint>

#include "kernels/check.h"
#include "kernels/cpu/ops.h"
#include "kernels/f16.h"

namespace kvsession::kernels {

void FillRandom(GgmlType type, void* dst, int64_t n, uint64_t seed,
                float scale, const CpuExec& exec) {
  KVS_CHECK(type == GgmlType::kF32 || type == GgmlType::kF16 ||
            type == GgmlType::kBF16)
      << "FillRandom: type " << TypeName(type);
#pragma omp parallel for num_threads(exec.n_threads) schedule(static) \
    if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float v = RandomUnit(seed, static_cast<uint64_t>(i)) * scale;
    if (type == GgmlType::kF32) {
      static_cast<float*>(dst)[i] = v;
    } else if (type == GgmlType::kF16) {
      static_cast<uint16_t*>(dst)[i] = FloatToHalf(v);
    } else {
      static_cast<uint16_t*>(dst)[i] = FloatToBf16(v);
    }
  }
}

}  // namespace kvsession::kernels
