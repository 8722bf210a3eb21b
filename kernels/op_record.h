// One primitive op of a step as data, and the fusions a backend may run in
// its place. A GPU backend records a step's ops (Backend::RunStep) and asks
// MatchFusion which runs of them one launch can replace; the matcher only
// proposes a fusion whose result is the unfused ops' result, bit for bit,
// including every buffer a later op of the step reads. It lives here, free
// of any device code, so that its rules are tested on every machine.
#ifndef KVSESSION_KERNELS_OP_RECORD_H_
#define KVSESSION_KERNELS_OP_RECORD_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "kernels/kv_cache_view.h"
#include "kernels/op_params.h"

namespace kvsession::kernels {

enum class OpKind : uint8_t {
  kEmbed,       // out = rows `ints` of w
  kRmsNorm,     // out = RmsNorm(a) * b, n rows of dim
  kMatMul,      // out = w a, n tokens (out padded to row_padding rows)
  kAddBias,     // out = a + b per row, n rows of dim
  kRope,        // out (in place) rotated, n tokens of n_heads heads
  kKvWrite,     // KV <- (a, b), placement
  kAttention,   // out = attention(a), placement
  kSwiGlu,      // out = silu(a) * b, n elements
  kGeGlu,       // out = gelu(a) * b, n elements
  kScale,       // out = a * alpha, n elements
  kAdd,         // out = a + b, n elements
  kGatherRows,  // out = rows `ints` of a, n rows of dim
};

struct OpRecord {
  OpKind kind = OpKind::kAdd;
  WeightView w;
  const float* a = nullptr;
  const float* b = nullptr;
  float* out = nullptr;
  const int32_t* ints = nullptr;  // tokens, positions or rows
  TokenPlacement placement;
  KvCacheView kv;
  int32_t layer = 0;
  int64_t n = 0;
  int64_t dim = 0;
  int32_t n_heads = 0;
  float eps = 0.0f;
  float alpha = 0.0f;  // Scale's factor
  RopeParams rope;
  AttentionParams attn;
};

enum class FusionKind : uint8_t {
  kNone,
  // [Add(x, r -> x)] RmsNorm(x -> s) MatMul(w_i, s)...: the norm rows go
  // straight into the GEMM input; s is never written.
  kAddNormMatMuls,
  kMatMuls,        // MatMuls of one input: the input is rounded once
  kSwiGluMatMul,   // SwiGlu(g, u -> s) MatMul(w, s): s is never written
  kRopeKvWrite,    // Rope(q) Rope(k) KvWrite(k, v) at the same positions
};

struct FusionMatch {
  FusionKind kind = FusionKind::kNone;
  size_t count = 1;  // ops it replaces, starting at the index asked about
};

// The fusion of the ops starting at ops[i], if any. row_padding: rows a
// MatMul output is padded to (Backend::RowPadding). max_matmuls: the most
// weights one fused GEMM takes.
FusionMatch MatchFusion(std::span<const OpRecord> ops, size_t i,
                        int64_t row_padding, size_t max_matmuls);

}  // namespace kvsession::kernels

#endif  // KVSESSION_KERNELS_OP_RECORD_H_
