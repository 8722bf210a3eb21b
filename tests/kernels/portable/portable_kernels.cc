// Compiled into the portable kernel library (kvsession renamed there).
#include "tests/kernels/portable/portable_kernels.h"

#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"
#include "kernels/ggml_type.h"

namespace kvs_portable {

bool UsesAvx2() { return KVS_CPU_AVX2 != 0; }

void MatMul(uint32_t type, const void* data, int64_t rows, int64_t cols,
            size_t row_bytes, const float* x, int64_t n_tokens, float* out,
            int n_threads) {
  namespace k = ::kvsession::kernels;
  const k::WeightView w{static_cast<k::GgmlType>(type), data, rows, cols,
                        row_bytes};
  k::MatMul(w, x, n_tokens, out, k::CpuExec{n_threads});
}

}  // namespace kvs_portable
