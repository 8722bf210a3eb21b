// MatchFusion over op sequences built by hand the way runtime/arch's
// LayerGraph issues a llama layer (with Qwen2's biases and Qwen3's per-head
// norms as options): which fusions are proposed, where and over how many
// ops, and which are refused because a later op would see a different
// buffer or the ops do not fit one launch.
#include "kernels/op_record.h"

#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace kvsession::kernels {
namespace {

constexpr int64_t kPad = 64;  // CUDA's RowPadding (gemm_columns)
constexpr size_t kMaxMatMuls = 4;
constexpr int64_t kTokens = 7;
constexpr int64_t kDim = 64;
constexpr int32_t kHeads = 4;
constexpr int32_t kKvHeads = 2;
constexpr int32_t kHeadDim = 16;
constexpr int64_t kFfn = 128;

// Distinct fake buffers: slices of one vector, each kPad rows wide (room for
// a padded MatMul output), never read.
class Buffers {
 public:
  Buffers() : store_(1 << 20) {}
  float* Take(int64_t width) {
    float* p = store_.data() + used_;
    used_ += kPad * width;
    return p;
  }
  // A buffer of exactly `floats` (no room for padding rows).
  float* TakeExact(int64_t floats) {
    float* p = store_.data() + used_;
    used_ += floats;
    return p;
  }

 private:
  std::vector<float> store_;
  int64_t used_ = 0;
};

WeightView Weight(int64_t rows, int64_t cols, GgmlType type = GgmlType::kF16) {
  static std::vector<uint8_t> fake(16);
  WeightView w;
  w.type = type;
  w.data = fake.data();
  w.rows = rows;
  w.cols = cols;
  w.row_bytes = static_cast<size_t>(cols) * 2;
  return w;
}

OpRecord Norm(const float* x, const float* w, int64_t rows, int64_t dim,
              float* out) {
  OpRecord op;
  op.kind = OpKind::kRmsNorm;
  op.a = x;
  op.b = w;
  op.n = rows;
  op.dim = dim;
  op.eps = 1e-5f;
  op.out = out;
  return op;
}

OpRecord MatMul(const WeightView& w, const float* x, int64_t n, float* out) {
  OpRecord op;
  op.kind = OpKind::kMatMul;
  op.w = w;
  op.a = x;
  op.n = n;
  op.out = out;
  return op;
}

OpRecord AddBias(const float* x, const float* bias, int64_t rows, int64_t dim,
                 float* out) {
  OpRecord op;
  op.kind = OpKind::kAddBias;
  op.a = x;
  op.b = bias;
  op.n = rows;
  op.dim = dim;
  op.out = out;
  return op;
}

RopeParams Rope16() {
  RopeParams r;
  r.head_dim = kHeadDim;
  r.rot_dim = kHeadDim;
  return r;
}

OpRecord Rope(float* x, int64_t n, int32_t heads, const int32_t* positions,
              const RopeParams& params) {
  OpRecord op;
  op.kind = OpKind::kRope;
  op.out = x;
  op.n = n;
  op.n_heads = heads;
  op.ints = positions;
  op.rope = params;
  return op;
}

OpRecord Binary(OpKind kind, const float* a, const float* b, int64_t n,
                float* out) {
  OpRecord op;
  op.kind = kind;
  op.a = a;
  op.b = b;
  op.n = n;
  op.out = out;
  return op;
}

// The step: its positions, block tables and KV view.
struct StepState {
  int32_t positions[kTokens] = {0, 1, 2, 3, 4, 5, 6};
  int32_t other_positions[kTokens] = {0, 1, 2, 3, 4, 5, 6};
  const int32_t* tables[kTokens] = {};
  KvCacheView kv;
  TokenPlacement placement;
  StepState() {
    kv.num_blocks = 4;
    kv.block_size = 16;
    kv.n_layers = 2;
    kv.n_kv_heads = kKvHeads;
    kv.head_dim = kHeadDim;
    placement.n_tokens = kTokens;
    placement.positions = positions;
    placement.block_tables = tables;
  }
};

OpRecord KvWrite(const StepState& s, int32_t layer, const float* k,
                 const float* v) {
  OpRecord op;
  op.kind = OpKind::kKvWrite;
  op.kv = s.kv;
  op.layer = layer;
  op.placement = s.placement;
  op.a = k;
  op.b = v;
  return op;
}

OpRecord Attention(const StepState& s, int32_t layer, const float* q,
                   float* out) {
  OpRecord op;
  op.kind = OpKind::kAttention;
  op.kv = s.kv;
  op.layer = layer;
  op.placement = s.placement;
  op.a = q;
  op.attn.n_heads = kHeads;
  op.attn.scale = 0.25f;
  op.out = out;
  return op;
}

// The activations (runtime/arch/family.h StepBuffers) and one layer's
// weights.
struct Model {
  Buffers store;
  float* x = store.Take(kDim);
  float* cur = store.Take(kFfn);
  float* q = store.Take(kHeads * kHeadDim);
  float* k = store.Take(kKvHeads * kHeadDim);
  float* v = store.Take(kKvHeads * kHeadDim);
  float* att = store.Take(kHeads * kHeadDim);
  float* gate = store.Take(kFfn);
  float* up = store.Take(kFfn);
  float* attn_norm = store.Take(1);
  float* ffn_norm = store.Take(1);
  float* bias = store.Take(1);
  float* qk_norm = store.Take(1);
  WeightView wq = Weight(kHeads * kHeadDim, kDim);
  WeightView wk = Weight(kKvHeads * kHeadDim, kDim);
  WeightView wv = Weight(kKvHeads * kHeadDim, kDim);
  WeightView wo = Weight(kDim, kHeads * kHeadDim);
  WeightView wgate = Weight(kFfn, kDim);
  WeightView wup = Weight(kFfn, kDim);
  WeightView wdown = Weight(kDim, kFfn);
  StepState step;
};

struct LayerOptions {
  bool biases = false;   // Qwen2
  bool qk_norm = false;  // Qwen3
};

// LayerGraph's llama layer (runtime/arch/llama_layer.h, family.cc).
void Layer(Model& m, int32_t layer, const LayerOptions& o,
           std::vector<OpRecord>* ops) {
  const int64_t T = kTokens;
  ops->push_back(Norm(m.x, m.attn_norm, T, kDim, m.cur));
  ops->push_back(MatMul(m.wq, m.cur, T, m.q));
  ops->push_back(MatMul(m.wk, m.cur, T, m.k));
  ops->push_back(MatMul(m.wv, m.cur, T, m.v));
  if (o.biases) {
    ops->push_back(AddBias(m.q, m.bias, T, m.wq.rows, m.q));
    ops->push_back(AddBias(m.k, m.bias, T, m.wk.rows, m.k));
    ops->push_back(AddBias(m.v, m.bias, T, m.wv.rows, m.v));
  }
  if (o.qk_norm) {
    ops->push_back(Norm(m.q, m.qk_norm, T * kHeads, kHeadDim, m.q));
    ops->push_back(Norm(m.k, m.qk_norm, T * kKvHeads, kHeadDim, m.k));
  }
  ops->push_back(Rope(m.q, T, kHeads, m.step.positions, Rope16()));
  ops->push_back(Rope(m.k, T, kKvHeads, m.step.positions, Rope16()));
  ops->push_back(KvWrite(m.step, layer, m.k, m.v));
  ops->push_back(Attention(m.step, layer, m.q, m.att));
  ops->push_back(MatMul(m.wo, m.att, T, m.cur));
  ops->push_back(Binary(OpKind::kAdd, m.x, m.cur, T * kDim, m.x));
  ops->push_back(Norm(m.x, m.ffn_norm, T, kDim, m.cur));
  ops->push_back(MatMul(m.wgate, m.cur, T, m.gate));
  ops->push_back(MatMul(m.wup, m.cur, T, m.up));
  ops->push_back(Binary(OpKind::kSwiGlu, m.gate, m.up, T * kFfn, m.gate));
  ops->push_back(MatMul(m.wdown, m.gate, T, m.cur));
  ops->push_back(Binary(OpKind::kAdd, m.x, m.cur, T * kDim, m.x));
}

struct Found {
  size_t index;
  FusionKind kind;
  size_t count;
  bool operator==(const Found&) const = default;
};

std::string KindName(FusionKind k) {
  switch (k) {
    case FusionKind::kNone: return "None";
    case FusionKind::kAddNormMatMuls: return "AddNormMatMuls";
    case FusionKind::kMatMuls: return "MatMuls";
    case FusionKind::kSwiGluMatMul: return "SwiGluMatMul";
    case FusionKind::kRopeKvWrite: return "RopeKvWrite";
  }
  return "?";
}

void PrintTo(const Found& f, std::ostream* os) {
  *os << "{" << f.index << ", " << KindName(f.kind) << ", " << f.count << "}";
}

// The fusions a backend's Flush runs, walking the ops as it does.
std::vector<Found> Walk(const std::vector<OpRecord>& ops,
                        int64_t pad = kPad, size_t max = kMaxMatMuls) {
  std::vector<Found> out;
  for (size_t i = 0; i < ops.size();) {
    const FusionMatch f = MatchFusion(ops, i, pad, max);
    EXPECT_GE(f.count, 1u);
    if (f.kind != FusionKind::kNone) out.push_back({i, f.kind, f.count});
    i += f.count;
  }
  return out;
}

FusionMatch At(const std::vector<OpRecord>& ops, size_t i, int64_t pad = kPad,
               size_t max = kMaxMatMuls) {
  return MatchFusion(ops, i, pad, max);
}

constexpr FusionKind kNorm = FusionKind::kAddNormMatMuls;
constexpr FusionKind kMatMuls = FusionKind::kMatMuls;
constexpr FusionKind kSwiGlu = FusionKind::kSwiGluMatMul;
constexpr FusionKind kRope = FusionKind::kRopeKvWrite;
constexpr FusionKind kNone = FusionKind::kNone;

TEST(MatchFusionTest, TwoLlamaLayers) {
  Model m;
  std::vector<OpRecord> ops;
  Layer(m, 0, {}, &ops);
  Layer(m, 1, {}, &ops);
  ASSERT_EQ(ops.size(), 32u);
  const std::vector<Found> want = {
      {0, kNorm, 4},     // attn_norm + q, k, v
      {4, kRope, 3},     // Rope q, Rope k, KvWrite
      {9, kNorm, 4},     // Add + ffn_norm + gate, up
      {13, kSwiGlu, 2},  // gate is overwritten by layer 1's gate MatMul
      {15, kNorm, 5},    // Add + layer 1's attn_norm + q, k, v
      {20, kRope, 3},
      {25, kNorm, 4},
      // 29: the last SwiGlu's output is never overwritten: live, not fused.
  };
  EXPECT_EQ(Walk(ops), want);
  EXPECT_EQ(At(ops, 29).kind, kNone);
  EXPECT_EQ(At(ops, 31).kind, kNone);  // a last Add without a norm
}

TEST(MatchFusionTest, Qwen2BiasesAndQwen3HeadNorms) {
  for (const LayerOptions o : {LayerOptions{true, false},
                               LayerOptions{false, true},
                               LayerOptions{true, true}}) {
    SCOPED_TRACE(::testing::Message() << "biases " << o.biases << " qk_norm "
                                      << o.qk_norm);
    Model m;
    std::vector<OpRecord> ops;
    Layer(m, 0, o, &ops);
    Layer(m, 1, o, &ops);
    const size_t extra = (o.biases ? 3 : 0) + (o.qk_norm ? 2 : 0);
    const size_t layer = 16 + extra;
    ASSERT_EQ(ops.size(), 2 * layer);
    const size_t rope = 4 + extra;
    const std::vector<Found> want = {
        {0, kNorm, 4},
        {rope, kRope, 3},
        {rope + 5, kNorm, 4},
        {rope + 9, kSwiGlu, 2},
        {rope + 11, kNorm, 5},
        {layer + rope, kRope, 3},
        {layer + rope + 5, kNorm, 4},
    };
    EXPECT_EQ(Walk(ops), want);
    if (o.qk_norm) {
      // An in-place per-head norm followed by another norm: nothing.
      EXPECT_EQ(At(ops, rope - 2).kind, kNone);
      EXPECT_EQ(At(ops, rope - 1).kind, kNone);
    }
  }
}

TEST(MatchFusionTest, AddWritingItsSecondOperandIsAccepted) {
  Model m;
  // x = cur + x, then the norm of x and the FFN's MatMuls.
  std::vector<OpRecord> ops = {
      Binary(OpKind::kAdd, m.cur, m.x, kTokens * kDim, m.x),
      Norm(m.x, m.ffn_norm, kTokens, kDim, m.cur),
      MatMul(m.wgate, m.cur, kTokens, m.gate),
      MatMul(m.wup, m.cur, kTokens, m.up),
      MatMul(m.wdown, m.gate, kTokens, m.cur),  // overwrites cur
  };
  EXPECT_EQ(At(ops, 0).kind, kNorm);
  EXPECT_EQ(At(ops, 0).count, 4u);
  // An Add writing a third buffer is no residual update: not fused.
  ops[0] = Binary(OpKind::kAdd, m.cur, m.att, kTokens * kDim, m.x);
  EXPECT_EQ(At(ops, 0).kind, kNone);
  EXPECT_EQ(At(ops, 1).kind, kNorm);
  EXPECT_EQ(At(ops, 1).count, 3u);
}

TEST(MatchFusionTest, NormOutputReadLaterIsNotFused) {
  Model m;
  const int64_t T = kTokens;
  std::vector<OpRecord> ops = {
      Norm(m.x, m.attn_norm, T, kDim, m.cur),
      MatMul(m.wq, m.cur, T, m.q),
      MatMul(m.wk, m.cur, T, m.k),
      MatMul(m.wv, m.cur, T, m.v),
      Binary(OpKind::kAdd, m.x, m.cur, T * kDim, m.att),  // reads cur
      MatMul(m.wo, m.att, T, m.cur),                      // then overwrites
  };
  EXPECT_EQ(At(ops, 0).kind, kNone);
  // The MatMuls alone still share their input.
  EXPECT_EQ(At(ops, 1).kind, kMatMuls);
  EXPECT_EQ(At(ops, 1).count, 3u);

  // Overwritten first (wo into cur), read after: fused.
  std::swap(ops[4], ops[5]);
  ops[4] = MatMul(m.wo, m.att, T, m.cur);
  ops[5] = Binary(OpKind::kAdd, m.x, m.cur, T * kDim, m.x);
  EXPECT_EQ(At(ops, 0).kind, kNorm);
  EXPECT_EQ(At(ops, 0).count, 4u);

  // Only part of cur overwritten (fewer rows) before the read: live.
  ops[4] = MatMul(m.wo, m.att, 1, m.cur);
  EXPECT_EQ(At(ops, 0, /*pad=*/1).kind, kNone);

  // Strict rule: nothing after the group overwrites cur: live.
  ops.resize(4);
  EXPECT_EQ(At(ops, 0).kind, kNone);
}

TEST(MatchFusionTest, LastSwiGluOutputIsLive) {
  Model m;
  const int64_t T = kTokens;
  std::vector<OpRecord> ops = {
      Binary(OpKind::kSwiGlu, m.gate, m.up, T * kFfn, m.gate),
      MatMul(m.wdown, m.gate, T, m.cur),
      Binary(OpKind::kAdd, m.x, m.cur, T * kDim, m.x),
  };
  EXPECT_EQ(At(ops, 0).kind, kNone);
  // Once a later MatMul overwrites gate, the SwiGlu output is dead.
  ops.push_back(MatMul(m.wgate, m.cur, T, m.gate));
  EXPECT_EQ(At(ops, 0).kind, kSwiGlu);
  EXPECT_EQ(At(ops, 0).count, 2u);
  // Read before that overwrite: live again.
  ops.insert(ops.begin() + 2,
             Binary(OpKind::kAdd, m.gate, m.up, T * kDim, m.att));
  EXPECT_EQ(At(ops, 0).kind, kNone);
}

TEST(MatchFusionTest, RopeKvWriteNeedsSamePositionsAndParams) {
  Model m;
  const int64_t T = kTokens;
  const auto ops_with = [&](const int32_t* k_positions, RopeParams k_rope) {
    return std::vector<OpRecord>{
        Rope(m.q, T, kHeads, m.step.positions, Rope16()),
        Rope(m.k, T, kKvHeads, k_positions, k_rope),
        KvWrite(m.step, 0, m.k, m.v),
    };
  };
  EXPECT_EQ(At(ops_with(m.step.positions, Rope16()), 0).kind, kRope);
  EXPECT_EQ(At(ops_with(m.step.positions, Rope16()), 0).count, 3u);
  // Equal values, but another array: not provably the same positions.
  EXPECT_EQ(At(ops_with(m.step.other_positions, Rope16()), 0).kind, kNone);
  RopeParams p = Rope16();
  p.freq_scale = 0.5f;
  EXPECT_EQ(At(ops_with(m.step.positions, p), 0).kind, kNone);
  p = Rope16();
  p.mode = RopeMode::kNeox;
  EXPECT_EQ(At(ops_with(m.step.positions, p), 0).kind, kNone);
  p = Rope16();
  p.rot_dim = 8;
  EXPECT_EQ(At(ops_with(m.step.positions, p), 0).kind, kNone);
  p = Rope16();
  p.freq_base = 1e6f;
  EXPECT_EQ(At(ops_with(m.step.positions, p), 0).kind, kNone);
  // KvWrite of another k than the one rotated.
  std::vector<OpRecord> ops = ops_with(m.step.positions, Rope16());
  ops[2] = KvWrite(m.step, 0, m.v, m.v);
  EXPECT_EQ(At(ops, 0).kind, kNone);
  // q and k in one buffer (k rotated twice in one launch): refused.
  ops = ops_with(m.step.positions, Rope16());
  ops[1].out = m.q;
  ops[2].a = m.q;
  EXPECT_EQ(At(ops, 0).kind, kNone);
}

TEST(MatchFusionTest, MatMulWritingItsOwnInputEndsTheGroup) {
  Model m;
  const int64_t T = kTokens;
  std::vector<OpRecord> ops = {
      MatMul(m.wq, m.cur, T, m.q),
      MatMul(m.wk, m.cur, T, m.k),
      MatMul(m.wv, m.cur, T, m.cur),  // into its input
  };
  EXPECT_EQ(At(ops, 0).kind, kMatMuls);
  EXPECT_EQ(At(ops, 0).count, 2u);
  ops.erase(ops.begin());  // k, then v into cur
  EXPECT_EQ(At(ops, 0).kind, kNone);

  // After a norm: the norm output cur is read by the excluded MatMul.
  ops = {Norm(m.x, m.attn_norm, T, kDim, m.cur), MatMul(m.wq, m.cur, T, m.q),
         MatMul(m.wk, m.cur, T, m.cur), MatMul(m.wo, m.att, T, m.cur)};
  EXPECT_EQ(At(ops, 0).kind, kNone);
  // A MatMul of the group writing into the norm's input x: refused.
  ops = {Norm(m.x, m.attn_norm, T, kDim, m.cur), MatMul(m.wq, m.cur, T, m.x),
         MatMul(m.wo, m.att, T, m.cur)};
  EXPECT_EQ(At(ops, 0).kind, kNone);
}

TEST(MatchFusionTest, PaddedOutputRowsCount) {
  Model m;
  const int64_t T = kTokens;
  // q holds exactly T rows and cur follows it: a GEMM writing whole
  // 64-row tiles into q runs over cur, the group's input.
  Buffers tight;
  float* q = tight.TakeExact(T * m.wq.rows);
  float* cur = tight.TakeExact(kPad * kDim);
  const std::vector<OpRecord> ops = {MatMul(m.wq, cur, T, q),
                                     MatMul(m.wk, cur, T, m.k)};
  EXPECT_EQ(At(ops, 0, /*pad=*/1).kind, kMatMuls);
  EXPECT_EQ(At(ops, 0, kPad).kind, kNone);
}

TEST(MatchFusionTest, MatMulsOfDifferentTypesAreNotGrouped) {
  Model m;
  const int64_t T = kTokens;
  const WeightView wk_bf16 = Weight(m.wk.rows, kDim, GgmlType::kBF16);
  std::vector<OpRecord> ops = {MatMul(m.wq, m.cur, T, m.q),
                               MatMul(wk_bf16, m.cur, T, m.k),
                               MatMul(m.wv, m.cur, T, m.v)};
  EXPECT_EQ(At(ops, 0).kind, kNone);
  ops[2].w = Weight(m.wv.rows, kDim, GgmlType::kBF16);
  EXPECT_EQ(At(ops, 1).kind, kMatMuls);
  EXPECT_EQ(At(ops, 1).count, 2u);
  // After a norm, the group stops at the first other type, and the rest
  // still reads the norm output: not fused.
  ops.insert(ops.begin(), Norm(m.x, m.attn_norm, T, kDim, m.cur));
  ops.push_back(MatMul(m.wo, m.att, T, m.cur));
  EXPECT_EQ(At(ops, 0).kind, kNone);
}

TEST(MatchFusionTest, MaxMatMulsCapsTheGroup) {
  Model m;
  const int64_t T = kTokens;
  std::vector<OpRecord> ops = {MatMul(m.wq, m.cur, T, m.q),
                               MatMul(m.wk, m.cur, T, m.k),
                               MatMul(m.wv, m.cur, T, m.v)};
  EXPECT_EQ(At(ops, 0, kPad, 4).count, 3u);
  EXPECT_EQ(At(ops, 0, kPad, 2).kind, kMatMuls);
  EXPECT_EQ(At(ops, 0, kPad, 2).count, 2u);
  EXPECT_EQ(At(ops, 0, kPad, 1).kind, kNone);
  // Norm + q, k, v under a cap of 2: v would read the unwritten norm
  // output, so the norm is not fused at all.
  ops.insert(ops.begin(), Norm(m.x, m.attn_norm, T, kDim, m.cur));
  ops.push_back(MatMul(m.wo, m.att, T, m.cur));
  EXPECT_EQ(At(ops, 0, kPad, 3).kind, kNorm);
  EXPECT_EQ(At(ops, 0, kPad, 3).count, 4u);
  EXPECT_EQ(At(ops, 0, kPad, 2).kind, kNone);
}

TEST(MatchFusionTest, OutOfRangeAndOtherOps) {
  Model m;
  const std::vector<OpRecord> ops = {
      Attention(m.step, 0, m.q, m.att),
      MatMul(m.wo, m.att, kTokens, m.cur),
  };
  EXPECT_EQ(At(ops, 0).kind, kNone);
  EXPECT_EQ(At(ops, 0).count, 1u);
  EXPECT_EQ(At(ops, 1).kind, kNone);  // one MatMul alone
  EXPECT_EQ(At(ops, 2).kind, kNone);
}

}  // namespace
}  // namespace kvsession::kernels
