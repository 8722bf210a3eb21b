// The ops of CudaBackend. Inside RunStep they are recorded and run by
// Flush, which replaces the runs MatchFusion (kernels/op_record.h) names by
// one launch each; outside a step they run at once.
#include <algorithm>
#include <vector>

#include "kernels/check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {

void CudaBackend::Issue(const OpRecord& op) {
  if (recording_) {
    queue_.push_back(op);
  } else {
    Execute(op);
  }
}

void CudaBackend::Flush() {
  const std::span<const OpRecord> ops(queue_);
  for (size_t i = 0; i < ops.size();) {
    const FusionMatch f = MatchFusion(ops, i, options_.gemm_columns,
                                      static_cast<size_t>(kMaxSplitColumns));
    if (f.kind == FusionKind::kNone) {
      Execute(ops[i]);
    } else {
      RunFused(f.kind, ops.subspan(i, f.count));
    }
    i += f.count;
  }
  queue_.clear();
}

void CudaBackend::RunFused(FusionKind kind, std::span<const OpRecord> ops) {
  // The MatMuls of a run, from its index `first` on.
  auto matmuls = [&](size_t first, const WeightView** ws, float** outs) {
    size_t n = 0;
    for (size_t i = first; i < ops.size(); ++i, ++n) {
      ws[n] = &ops[i].w;
      outs[n] = ops[i].out;
    }
    return n;
  };
  const WeightView* ws[kMaxSplitColumns];
  float* outs[kMaxSplitColumns];
  switch (kind) {
    case FusionKind::kAddNormMatMuls: {
      const bool has_add = ops[0].kind == OpKind::kAdd;
      const OpRecord& norm = ops[has_add ? 1 : 0];
      const float* residual = nullptr;
      if (has_add) residual = ops[0].out == ops[0].a ? ops[0].b : ops[0].a;
      const size_t n = matmuls(has_add ? 2 : 1, ws, outs);
      AddNormMatMuls(const_cast<float*>(norm.a), residual, norm.b, norm.n,
                     norm.dim, norm.eps, {ws, n}, {outs, n});
      return;
    }
    case FusionKind::kMatMuls: {
      const size_t n = matmuls(0, ws, outs);
      MatMuls({ws, n}, ops[0].a, ops[0].n, {outs, n});
      return;
    }
    case FusionKind::kSwiGluMatMul:
      SwiGluMatMul(ops[0].a, ops[0].b, ops[1].n, ops[1].w, ops[1].out);
      return;
    case FusionKind::kRopeKvWrite:
      RopeKvWrite(ops[0].out, ops[0].n_heads, ops[1].out, ops[2].b,
                  ops[0].rope, ops[2].kv, ops[2].layer, ops[2].placement);
      return;
    case FusionKind::kNone:
      break;
  }
  for (const OpRecord& op : ops) Execute(op);
}

void CudaBackend::Execute(const OpRecord& op) {
  switch (op.kind) {
    case OpKind::kEmbed:
      LaunchEmbed(op.w, op.ints, op.n, op.out, stream_);
      return;
    case OpKind::kRmsNorm:
      LaunchRmsNorm(op.a, op.b, op.n, op.dim, op.eps, op.out, stream_);
      return;
    case OpKind::kMatMul:
      gemm_->MatMul(op.w, op.a, op.n, op.out, /*padded_out=*/true);
      return;
    case OpKind::kAddBias:
      LaunchAddBias(op.a, op.b, op.n, op.dim, op.out, stream_);
      return;
    case OpKind::kRope:
      LaunchRope(op.out, op.n, op.n_heads, op.ints, op.rope, stream_);
      return;
    case OpKind::kKvWrite:
      LaunchKvWrite(op.kv, op.layer, op.placement, op.a, op.b, stream_);
      return;
    case OpKind::kAttention:
      RunAttention(op);
      return;
    case OpKind::kSwiGlu:
      LaunchSwiGlu(op.a, op.b, op.n, op.out, stream_);
      return;
    case OpKind::kGeGlu:
      LaunchGeGlu(op.a, op.b, op.n, op.out, stream_);
      return;
    case OpKind::kScale:
      LaunchScale(op.a, op.alpha, op.n, op.out, stream_);
      return;
    case OpKind::kAdd:
      LaunchAdd(op.a, op.b, op.n, op.out, stream_);
      return;
    case OpKind::kGatherRows:
      LaunchGatherRows(op.a, op.ints, op.n, op.dim, op.out, stream_);
      return;
  }
}

void CudaBackend::RunAttention(const OpRecord& op) {
  const KvCacheView& kv = op.kv;
  const AttentionParams& params = op.attn;
  const int32_t partition = options_.attention_partition;
  const int32_t n = op.placement.n_tokens;
  if (n <= 0) return;
  // The workspace grows with tokens x heads x partitions (a 512-token
  // prefill chunk at 16k context would need 2 GiB at partition 64), so long
  // batches go in slices of tokens that fit the cap.
  const size_t per_token =
      static_cast<size_t>(AttentionWorkspaceFloats(
          1, params.n_heads, kv.head_dim, partition, step_.max_position)) *
      sizeof(float);
  const int32_t slice = static_cast<int32_t>(std::clamp<size_t>(
      options_.attention_workspace_bytes / per_token, 1, n));
  void* ws = attn_ws_;
  Grow(&ws, &attn_ws_cap_, per_token * slice);
  attn_ws_ = static_cast<float*>(ws);
  const int64_t row = int64_t{params.n_heads} * kv.head_dim;
  for (int32_t t0 = 0; t0 < n; t0 += slice) {
    TokenPlacement part;
    part.n_tokens = std::min(slice, n - t0);
    part.positions = op.placement.positions + t0;
    part.block_tables = op.placement.block_tables + t0;
    LaunchAttention(kv, op.layer, part, op.a + t0 * row, params, partition,
                    step_.max_position, attn_ws_, op.out + t0 * row, stream_);
  }
}

void CudaBackend::MatMuls(std::span<const WeightView* const> ws,
                          const float* x, int64_t n_tokens,
                          std::span<float* const> outs) {
  gemm_->MatMuls(ws, x, n_tokens, outs, /*padded_out=*/true);
}

void CudaBackend::AddNormMatMuls(float* x, const float* residual,
                                 const float* norm, int64_t n_tokens,
                                 int64_t dim, float eps,
                                 std::span<const WeightView* const> ws,
                                 std::span<float* const> outs) {
  if (ws.empty() || n_tokens <= 0) return;
  KVS_CHECK(ws[0]->cols == dim) << "norm width " << dim << ", weights "
                                << ws[0]->cols;
  const GgmlType type = ws[0]->type;
  gemm_->MatMulsFrom(ws, n_tokens, outs, /*padded_out=*/true,
                     [&](void* input, int64_t rows) {
                       LaunchAddRmsNormRounded(x, residual, norm, n_tokens,
                                               rows, dim, eps, type, input,
                                               stream_);
                     });
}

void CudaBackend::SwiGluMatMul(const float* gate, const float* up,
                               int64_t n_tokens, const WeightView& w,
                               float* out) {
  const WeightView* ws[1] = {&w};
  float* outs[1] = {out};
  gemm_->MatMulsFrom(ws, n_tokens, outs, /*padded_out=*/true,
                     [&](void* input, int64_t rows) {
                       LaunchSwiGluRounded(gate, up, n_tokens, rows, w.cols,
                                           w.type, input, stream_);
                     });
}

void CudaBackend::RopeKvWrite(float* q, int32_t n_heads, float* k,
                              const float* v, const RopeParams& rope,
                              const KvCacheView& kv, int32_t layer,
                              const TokenPlacement& placement) {
  LaunchRopeKvWrite(q, n_heads, k, v, rope, kv, layer, placement, stream_);
}

// The primitive ops: each is one record.

void CudaBackend::Embed(const WeightView& table, const int32_t* tokens,
                        int64_t n_tokens, float* out) {
  OpRecord op;
  op.kind = OpKind::kEmbed;
  op.w = table;
  op.ints = tokens;
  op.n = n_tokens;
  op.out = out;
  Issue(op);
}

void CudaBackend::RmsNorm(const float* x, const float* weight, int64_t n_rows,
                          int64_t dim, float eps, float* out) {
  OpRecord op;
  op.kind = OpKind::kRmsNorm;
  op.a = x;
  op.b = weight;
  op.n = n_rows;
  op.dim = dim;
  op.eps = eps;
  op.out = out;
  Issue(op);
}

void CudaBackend::MatMul(const WeightView& w, const float* x, int64_t n_tokens,
                         float* out) {
  OpRecord op;
  op.kind = OpKind::kMatMul;
  op.w = w;
  op.a = x;
  op.n = n_tokens;
  op.out = out;
  Issue(op);
}

void CudaBackend::AddBias(const float* x, const float* bias, int64_t n_rows,
                          int64_t dim, float* out) {
  OpRecord op;
  op.kind = OpKind::kAddBias;
  op.a = x;
  op.b = bias;
  op.n = n_rows;
  op.dim = dim;
  op.out = out;
  Issue(op);
}

void CudaBackend::Rope(float* x, int64_t n_tokens, int32_t n_heads,
                       const int32_t* positions, const RopeParams& params) {
  OpRecord op;
  op.kind = OpKind::kRope;
  op.out = x;
  op.n = n_tokens;
  op.n_heads = n_heads;
  op.ints = positions;
  op.rope = params;
  Issue(op);
}

void CudaBackend::KvWrite(const KvCacheView& kv, int32_t layer,
                          const TokenPlacement& placement, const float* k,
                          const float* v) {
  OpRecord op;
  op.kind = OpKind::kKvWrite;
  op.kv = kv;
  op.layer = layer;
  op.placement = placement;
  op.a = k;
  op.b = v;
  Issue(op);
}

void CudaBackend::Attention(const KvCacheView& kv, int32_t layer,
                            const TokenPlacement& placement, const float* q,
                            const AttentionParams& params, float* out) {
  OpRecord op;
  op.kind = OpKind::kAttention;
  op.kv = kv;
  op.layer = layer;
  op.placement = placement;
  op.a = q;
  op.attn = params;
  op.out = out;
  Issue(op);
}

void CudaBackend::SwiGlu(const float* gate, const float* up, int64_t n,
                         float* out) {
  OpRecord op;
  op.kind = OpKind::kSwiGlu;
  op.a = gate;
  op.b = up;
  op.n = n;
  op.out = out;
  Issue(op);
}

void CudaBackend::GeGlu(const float* gate, const float* up, int64_t n,
                        float* out) {
  OpRecord op;
  op.kind = OpKind::kGeGlu;
  op.a = gate;
  op.b = up;
  op.n = n;
  op.out = out;
  Issue(op);
}

void CudaBackend::Scale(const float* x, float s, int64_t n, float* out) {
  OpRecord op;
  op.kind = OpKind::kScale;
  op.a = x;
  op.alpha = s;
  op.n = n;
  op.out = out;
  Issue(op);
}

void CudaBackend::Add(const float* a, const float* b, int64_t n, float* out) {
  OpRecord op;
  op.kind = OpKind::kAdd;
  op.a = a;
  op.b = b;
  op.n = n;
  op.out = out;
  Issue(op);
}

void CudaBackend::GatherRows(const float* src, const int32_t* rows,
                             int64_t n_rows, int64_t dim, float* dst) {
  OpRecord op;
  op.kind = OpKind::kGatherRows;
  op.a = src;
  op.ints = rows;
  op.n = n_rows;
  op.dim = dim;
  op.out = dst;
  Issue(op);
}

}  // namespace kvsession::kernels::cuda
