// Plain views that kernels receive: weights, the paged KV arena, a batch's
// positions and block tables. Kernels never see the session store.
#ifndef KVSESSION_KERNELS_KV_CACHE_VIEW_H_
#define KVSESSION_KERNELS_KV_CACHE_VIEW_H_

#include <cstddef>
#include <cstdint>

#include "kernels/ggml_type.h"
#include "kernels/host_device.h"

namespace kvsession::kernels {

// A 2-D weight matrix in GGUF order: `rows` rows of `cols` elements each,
// stored row-major, every row a whole number of blocks of `type`.
// y = W x means y[r] = dot(row r, x).
struct WeightView {
  GgmlType type = GgmlType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;
};

// The paged KV arena. Block b starts at base + b * BlockElems() f16 elements
// and is laid out [layer][k|v][kv_head][token][head_dim] (DESIGN.md), so one
// block holds every layer of `block_size` tokens and swaps as one copy.
struct KvCacheView {
  uint16_t* base = nullptr;  // IEEE f16 bits
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  int32_t n_layers = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;

  KVS_HOST_DEVICE int64_t BlockElems() const {
    return int64_t{n_layers} * 2 * n_kv_heads * block_size * head_dim;
  }
  // Offset (in elements) of the K (kv = 0) or V (kv = 1) row of one token.
  KVS_HOST_DEVICE int64_t Offset(int32_t block, int32_t layer, int32_t kv,
                                 int32_t head, int32_t slot) const {
    return int64_t{block} * BlockElems() +
           ((int64_t{layer} * 2 + kv) * n_kv_heads + head) * block_size *
               head_dim +
           int64_t{slot} * head_dim;
  }
};

// Where each token of a batch lives: its absolute position in its sequence
// and its sequence's block table (block id of positions [i*bs, (i+1)*bs)).
// A token at position p attends to positions 0..p of its own sequence (the
// last AttentionParams::window of them on a sliding-window layer).
struct TokenPlacement {
  int32_t n_tokens = 0;
  const int32_t* positions = nullptr;            // [n_tokens]
  const int32_t* const* block_tables = nullptr;  // [n_tokens]
};

}  // namespace kvsession::kernels

#endif  // KVSESSION_KERNELS_KV_CACHE_VIEW_H_
