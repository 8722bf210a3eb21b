#include <cstdint>

#include "kernels/check.h"
#include "kernels/cpu/ops.h"

namespace kvsession::kernels {

void Embed(const WeightView& table, const int32_t* tokens, int64_t n_tokens,
           float* out, const CpuExec& exec) {
  const auto* base = static_cast<const uint8_t*>(table.data);
#pragma omp parallel for num_threads(exec.n_threads) \
    schedule(static) if (n_tokens > 1)
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int32_t tok = tokens[t];
    KVS_CHECK(tok >= 0 && tok < table.rows)
        << "token " << tok << " outside the table of " << table.rows;
    DequantizeRow(table.type,
                  base + static_cast<int64_t>(tok) *
                             static_cast<int64_t>(table.row_bytes),
                  out + t * table.cols, table.cols);
  }
}

}  // namespace kvsession::kernels
