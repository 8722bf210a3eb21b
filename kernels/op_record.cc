#include "kernels/op_record.h"

#include <cstdint>
#include <limits>
#include <vector>

namespace kvsession::kernels {
namespace {

// A span of floats in some buffer.
struct Range {
  const float* begin = nullptr;
  int64_t size = 0;
};

bool Overlap(const Range& x, const Range& y) {
  if (x.begin == nullptr || y.begin == nullptr || x.size <= 0 || y.size <= 0) {
    return false;
  }
  const auto a = reinterpret_cast<uintptr_t>(x.begin);
  const auto b = reinterpret_cast<uintptr_t>(y.begin);
  // Sizes are in floats; compare in bytes without overflowing.
  const auto a_end = a + static_cast<uintptr_t>(x.size) * sizeof(float);
  const auto b_end = b + static_cast<uintptr_t>(y.size) * sizeof(float);
  return a < b_end && b < a_end;
}

bool Covers(const Range& outer, const Range& inner) {
  const auto o = reinterpret_cast<uintptr_t>(outer.begin);
  const auto i = reinterpret_cast<uintptr_t>(inner.begin);
  return outer.begin != nullptr && o <= i &&
         i + static_cast<uintptr_t>(inner.size) * sizeof(float) <=
             o + static_cast<uintptr_t>(outer.size) * sizeof(float);
}

int64_t Padded(int64_t n, int64_t pad) { return (n + pad - 1) / pad * pad; }

int64_t KvRow(const OpRecord& op) {
  return int64_t{op.kv.n_kv_heads} * op.kv.head_dim;
}

// The float ranges an op reads (at most two) and the one it writes.
int Reads(const OpRecord& op, Range out[2]) {
  switch (op.kind) {
    case OpKind::kEmbed:
      return 0;
    case OpKind::kRmsNorm:
      out[0] = {op.a, op.n * op.dim};
      return 1;
    case OpKind::kMatMul:
      out[0] = {op.a, op.n * op.w.cols};
      return 1;
    case OpKind::kAddBias:
      out[0] = {op.a, op.n * op.dim};
      out[1] = {op.b, op.dim};
      return 2;
    case OpKind::kRope:
      out[0] = {op.out, op.n * op.n_heads * op.rope.head_dim};
      return 1;
    case OpKind::kKvWrite:
      out[0] = {op.a, op.placement.n_tokens * KvRow(op)};
      out[1] = {op.b, op.placement.n_tokens * KvRow(op)};
      return 2;
    case OpKind::kAttention:
      out[0] = {op.a, int64_t{op.placement.n_tokens} * op.attn.n_heads *
                          op.kv.head_dim};
      return 1;
    case OpKind::kSwiGlu:
    case OpKind::kGeGlu:
    case OpKind::kAdd:
      out[0] = {op.a, op.n};
      out[1] = {op.b, op.n};
      return 2;
    case OpKind::kScale:
      out[0] = {op.a, op.n};
      return 1;
    case OpKind::kGatherRows:
      // The rows are known only where the ops run: assume all of the buffer.
      out[0] = {op.a, std::numeric_limits<int32_t>::max()};
      return 1;
  }
  return 0;
}

Range Writes(const OpRecord& op, int64_t pad) {
  switch (op.kind) {
    case OpKind::kEmbed:
      return {op.out, op.n * op.w.cols};
    case OpKind::kRmsNorm:
    case OpKind::kAddBias:
    case OpKind::kGatherRows:
      return {op.out, op.n * op.dim};
    case OpKind::kMatMul:
      return {op.out, Padded(op.n, pad) * op.w.rows};
    case OpKind::kRope:
      return {op.out, op.n * op.n_heads * op.rope.head_dim};
    case OpKind::kKvWrite:
      return {};
    case OpKind::kAttention:
      return {op.out, int64_t{op.placement.n_tokens} * op.attn.n_heads *
                          op.kv.head_dim};
    case OpKind::kSwiGlu:
    case OpKind::kGeGlu:
    case OpKind::kScale:
    case OpKind::kAdd:
      return {op.out, op.n};
  }
  return {};
}

// Whether no op from ops[from] on reads `r` before one overwrites all of it
// (a fused launch may then leave r unwritten). A buffer no later op
// overwrites counts as live: the step's caller may read it.
bool DeadAfter(std::span<const OpRecord> ops, size_t from, const Range& r,
               int64_t pad) {
  for (size_t j = from; j < ops.size(); ++j) {
    Range reads[2];
    const int n = Reads(ops[j], reads);
    for (int k = 0; k < n; ++k) {
      if (Overlap(reads[k], r)) return false;
    }
    if (Covers(Writes(ops[j], pad), r)) return true;
  }
  return false;
}

// MatMuls from ops[i] on that share input `x` of n rows of `cols`, of one
// weight type; none may write its input. Returns how many.
size_t SharedInputMatMuls(std::span<const OpRecord> ops, size_t i,
                          const float* x, int64_t n, int64_t cols,
                          int64_t pad, size_t max) {
  size_t count = 0;
  const Range input{x, n * cols};
  while (i + count < ops.size() && count < max) {
    const OpRecord& m = ops[i + count];
    if (m.kind != OpKind::kMatMul || m.a != x || m.n != n ||
        m.w.cols != cols || m.w.type != ops[i].w.type ||
        Overlap(Writes(m, pad), input)) {
      break;
    }
    ++count;
  }
  return count;
}

bool SameRope(const RopeParams& a, const RopeParams& b) {
  return a.head_dim == b.head_dim && a.rot_dim == b.rot_dim &&
         a.freq_base == b.freq_base && a.freq_scale == b.freq_scale &&
         a.mode == b.mode;
}

FusionMatch MatchNormMatMuls(std::span<const OpRecord> ops, size_t i,
                             int64_t pad, size_t max) {
  size_t k = i;
  if (ops[k].kind == OpKind::kAdd) {
    const OpRecord& add = ops[k];
    if (add.out != add.a && add.out != add.b) return {};
    ++k;
    if (k >= ops.size() || ops[k].kind != OpKind::kRmsNorm ||
        ops[k].a != add.out || ops[k].n * ops[k].dim != add.n) {
      return {};
    }
  }
  const OpRecord& norm = ops[k];
  if (norm.kind != OpKind::kRmsNorm || k + 1 >= ops.size() ||
      ops[k + 1].kind != OpKind::kMatMul) {
    return {};
  }
  const size_t m = SharedInputMatMuls(ops, k + 1, norm.out, norm.n, norm.dim,
                                      pad, max);
  if (m == 0) return {};
  const Range s{norm.out, norm.n * norm.dim};
  const Range x{norm.a, norm.n * norm.dim};
  for (size_t j = k + 1; j < k + 1 + m; ++j) {
    if (Overlap(Writes(ops[j], pad), x)) return {};
  }
  if (Overlap(s, x) || !DeadAfter(ops, k + 1 + m, s, pad)) return {};
  return {FusionKind::kAddNormMatMuls, k + 1 + m - i};
}

FusionMatch MatchSwiGluMatMul(std::span<const OpRecord> ops, size_t i,
                              int64_t pad) {
  const OpRecord& g = ops[i];
  if (i + 1 >= ops.size()) return {};
  const OpRecord& m = ops[i + 1];
  if (m.kind != OpKind::kMatMul || m.a != g.out || m.n * m.w.cols != g.n) {
    return {};
  }
  const Range s{g.out, g.n};
  if (Overlap(Writes(m, pad), s) || Overlap(Writes(m, pad), {g.a, g.n}) ||
      Overlap(Writes(m, pad), {g.b, g.n}) || !DeadAfter(ops, i + 2, s, pad)) {
    return {};
  }
  return {FusionKind::kSwiGluMatMul, 2};
}

FusionMatch MatchRopeKvWrite(std::span<const OpRecord> ops, size_t i,
                             int64_t pad) {
  if (i + 2 >= ops.size()) return {};
  const OpRecord& q = ops[i];
  const OpRecord& k = ops[i + 1];
  const OpRecord& w = ops[i + 2];
  if (k.kind != OpKind::kRope || w.kind != OpKind::kKvWrite ||
      k.ints != q.ints || k.n != q.n || !SameRope(q.rope, k.rope) ||
      w.a != k.out || w.placement.positions != q.ints ||
      w.placement.n_tokens != q.n || w.kv.n_kv_heads != k.n_heads ||
      w.kv.head_dim != q.rope.head_dim) {
    return {};
  }
  // One launch rotates q and k per token: they must be separate buffers.
  if (Overlap(Writes(q, pad), Writes(k, pad)) ||
      Overlap(Writes(q, pad), {w.b, w.placement.n_tokens * KvRow(w)})) {
    return {};
  }
  return {FusionKind::kRopeKvWrite, 3};
}

}  // namespace

FusionMatch MatchFusion(std::span<const OpRecord> ops, size_t i,
                        int64_t row_padding, size_t max_matmuls) {
  if (i >= ops.size()) return {};
  switch (ops[i].kind) {
    case OpKind::kAdd:
    case OpKind::kRmsNorm:
      return MatchNormMatMuls(ops, i, row_padding, max_matmuls);
    case OpKind::kMatMul: {
      const size_t m = SharedInputMatMuls(ops, i, ops[i].a, ops[i].n,
                                          ops[i].w.cols, row_padding,
                                          max_matmuls);
      if (m >= 2) return {FusionKind::kMatMuls, m};
      return {};
    }
    case OpKind::kSwiGlu:
      return MatchSwiGluMatMul(ops, i, row_padding);
    case OpKind::kRope:
      return MatchRopeKvWrite(ops, i, row_padding);
    default:
      return {};
  }
}

}  // namespace kvsession::kernels
