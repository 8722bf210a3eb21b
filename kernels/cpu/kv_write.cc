#include <cstdint>

#include "kernels/check.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

namespace kvsession::kernels {

void KvWrite(const KvCacheView& kv, int32_t layer,
             const TokenPlacement& placement, const float* k, const float* v,
             const CpuExec& exec) {
  KVS_CHECK(layer >= 0 && layer < kv.n_layers) << "layer " << layer;
  const int64_t row = int64_t{kv.n_kv_heads} * kv.head_dim;
#pragma omp parallel for num_threads(exec.n_threads) \
    schedule(static) if (placement.n_tokens > 8)
  for (int32_t t = 0; t < placement.n_tokens; ++t) {
    const int32_t pos = placement.positions[t];
    KVS_CHECK(pos >= 0) << "position " << pos;
    const int32_t block = placement.block_tables[t][pos / kv.block_size];
    KVS_CHECK(block >= 0 && block < kv.num_blocks) << "block " << block;
    const int32_t slot = pos % kv.block_size;
    for (int32_t h = 0; h < kv.n_kv_heads; ++h) {
      simd::StoreF16(k + t * row + int64_t{h} * kv.head_dim,
                     kv.base + kv.Offset(block, layer, 0, h, slot),
                     kv.head_dim);
      simd::StoreF16(v + t * row + int64_t{h} * kv.head_dim,
                     kv.base + kv.Offset(block, layer, 1, h, slot),
                     kv.head_dim);
    }
  }
}

}  // namespace kvsession::kernels
