// The helpers and single-op cases of backend_ops_test.cc's table: inputs,
// backend memory, steps, and one OpCase builder per primitive op. The
// invariance and fusion cases and the tests themselves are in
// backend_ops_test.cc.
#ifndef KVSESSION_TESTS_KERNELS_BACKEND_OPS_CASES_H_
#define KVSESSION_TESTS_KERNELS_BACKEND_OPS_CASES_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/backend_factory.h"
#include "kernels/cpu/ops.h"
#include "kernels/f16.h"
#include "kernels/ggml_type.h"

namespace kvsession::kernels::backend_ops {

using Floats = std::vector<float>;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// The reference kernels run single-threaded; the CPU backend under test
// uses 3 threads (a different split of rows).
inline const CpuExec kRefExec{1};

// ---- Tolerances (non-CPU backends; the CPU backend is always bitwise) ----

// |got - want| <= atol + rtol * scale, scale = |want| unless the case gives
// one (MatMul: sum |w * x| of the output's dot product).
struct Tolerance {
  double atol = 0;
  double rtol = 0;
};

// Embed of a quantized table: the CUDA backend stores every weight as F16
// (PrepareWeight dequantizes, then rounds once): <= 2^-11 relative, 2^-25
// absolute in the f16 subnormal range.
constexpr Tolerance kEmbedQuantTol{3e-8, 4.9e-4};
// RmsNorm: both sum the f32 squares in double (the CPU in order, CUDA as a
// fixed tree), so the f32 mean may differ by one rounding in rare rows.
constexpr Tolerance kRmsNormTol{1e-6, 1e-5};
// MatMul, relative to sum |w * x|. CUDA rounds x to the GEMM type and
// accumulates in f32: F16 <= 2^-11 per product (1e-3 covers it with the f32
// sum), BF16 <= 2^-9 (4e-3). Q8_0/Q4_1: the CPU quantizes x per block of 32
// to Q8_0/Q8_1 (error <= amax/254 per element, for x uniform in [-1, 1]
// <= 2/254 of sum |w x| even if every error had the same sign) while CUDA
// dequantizes the weight to F16 and rounds x to F16: 1e-2.
constexpr Tolerance kMatMulF16Tol{1e-5, 1e-3};
constexpr Tolerance kMatMulBf16Tol{1e-5, 4e-3};
constexpr Tolerance kMatMulQuantTol{1e-5, 1e-2};
// Rope: the same f32 angle chain, but the CPU's cosf/sinf and the device's
// double cos/sin rounded to f32 may differ by 1 ulp (kernels/cuda/rope.cu),
// ~6e-8 * |x| for |x| <= 2.
constexpr Tolerance kRopeTol{1e-5, 1e-5};
// Attention: K/V are the same f16 bits on both sides; the CPU rounds the
// normalised softmax weights to f16 (<= 2^-11 each), the rest is f32 order
// and exp (tests/kernels/cuda/attention_gpu_test.cc).
constexpr Tolerance kAttentionTol{2e-3, 2e-3};
// SwiGlu: CUDA evaluates the CPU's exp polynomial in the same sequence, so
// bitwise is expected, but the stated bound (elementwise_gpu_test.cc) is
// 1e-6 relative, 1e-37 absolute for results that underflow.
constexpr Tolerance kSwiGluTol{1e-37, 1e-6};
// GeGlu: the same exp and the same operation sequence; the same bound.
constexpr Tolerance kGeGluTol = kSwiGluTol;
// Bitwise cases need no tolerance: Embed of F16 (exact conversion), Add,
// AddBias (one IEEE add per element), GatherRows (a copy), KvWrite (f32 to
// f16, round to nearest even on both).
constexpr Tolerance kBitwise{0, 0};

// ---- Inputs ----

inline Floats Uniform(int64_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Floats v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

inline size_t RowBytes(GgmlType type, int64_t cols) {
  const TypeTraits& t = Traits(type);
  return static_cast<size_t>(cols / t.block_elems * t.block_bytes);
}

// A weight in host memory (as a GGUF mapping holds it).
struct HostWeight {
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> bytes;

  WeightView View() const {
    WeightView w;
    w.type = type;
    w.data = bytes.data();
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = RowBytes(type, cols);
    return w;
  }
  // Row r decoded to f32.
  Floats Row(int64_t r) const {
    Floats out(static_cast<size_t>(cols));
    DequantizeRow(type, bytes.data() + r * RowBytes(type, cols), out.data(),
                  cols);
    return out;
  }
};

inline HostWeight MakeWeight(GgmlType type, int64_t rows, int64_t cols,
                      uint32_t seed) {
  HostWeight w{type, rows, cols, {}};
  const size_t rb = RowBytes(type, cols);
  w.bytes.resize(rb * static_cast<size_t>(rows));
  const Floats v = Uniform(rows * cols, -1.0f, 1.0f, seed);
  for (int64_t r = 0; r < rows; ++r) {
    QuantizeRow(type, v.data() + r * cols, w.bytes.data() + r * rb, cols);
  }
  return w;
}

inline Floats Concat(std::initializer_list<Floats> parts) {
  Floats out;
  for (const Floats& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// ---- Backend memory ----

// Buffers of one case on one backend.
class Dev {
 public:
  explicit Dev(Backend& be) : be_(be) {}
  Backend& be() { return be_; }

  void* Alloc(size_t bytes) {
    absl::StatusOr<std::unique_ptr<Buffer>> b = be_.Allocate(bytes);
    if (!b.ok()) {
      ADD_FAILURE() << b.status();
      std::abort();
    }
    bufs_.push_back(*std::move(b));
    return bufs_.back()->data();
  }
  void* UploadBytes(const void* src, size_t bytes) {
    void* p = Alloc(bytes);
    be_.CopyFromHost(src, p, bytes);
    return p;
  }
  // v, then NaN up to `capacity` floats (rows a backend may pad).
  float* Upload(const Floats& v, int64_t capacity = 0) {
    Floats all = v;
    if (capacity > static_cast<int64_t>(all.size())) {
      all.resize(static_cast<size_t>(capacity), kNaN);
    }
    return static_cast<float*>(
        UploadBytes(all.data(), all.size() * sizeof(float)));
  }
  float* Output(int64_t n) { return Upload(Floats(static_cast<size_t>(n), kNaN)); }
  // Rows of a MatMul output: n_tokens rounded up to RowPadding().
  float* MatMulOutput(int64_t n_tokens, int64_t rows) {
    const int64_t pad = be_.RowPadding();
    return Output((n_tokens + pad - 1) / pad * pad * rows);
  }
  float* MatMulInput(const Floats& x, int64_t n_tokens, int64_t cols) {
    const int64_t pad = be_.RowPadding();
    return Upload(x, (n_tokens + pad - 1) / pad * pad * cols);
  }
  Floats Read(const float* p, int64_t n) {
    Floats out(static_cast<size_t>(n));
    be_.Synchronize();
    be_.CopyToHost(p, out.data(), out.size() * sizeof(float));
    return out;
  }
  // f16 bits, each as an exact float (for bitwise comparison of KV slots).
  Floats ReadBits(const uint16_t* p, int64_t n) {
    std::vector<uint16_t> bits(static_cast<size_t>(n));
    be_.Synchronize();
    be_.CopyToHost(p, bits.data(), bits.size() * 2);
    return Floats(bits.begin(), bits.end());
  }
  WeightView Weight(const HostWeight& w) {
    absl::StatusOr<WeightView> p = be_.PrepareWeight(w.View());
    if (!p.ok()) {
      ADD_FAILURE() << p.status();
      std::abort();
    }
    return *p;
  }
  std::vector<WeightView> Weights(std::initializer_list<const HostWeight*> ws) {
    std::vector<WeightView> host;
    for (const HostWeight* w : ws) host.push_back(w->View());
    absl::StatusOr<std::vector<WeightView>> p = be_.PrepareWeights(host);
    if (!p.ok()) {
      ADD_FAILURE() << p.status();
      std::abort();
    }
    return *p;
  }

 private:
  Backend& be_;
  std::vector<std::unique_ptr<Buffer>> bufs_;
};

// The host arrays of one step.
struct Step {
  std::vector<int32_t> tokens;
  std::vector<int32_t> positions;
  std::vector<const int32_t*> tables;
  std::vector<int32_t> logit_rows;
  const void* kv_base = nullptr;

  StepInputs Inputs() const {
    StepInputs in;
    in.tokens = tokens.data();
    in.placement.n_tokens = static_cast<int32_t>(positions.size());
    in.placement.positions = positions.data();
    in.placement.block_tables = tables.data();
    in.block_size = 16;
    in.logit_rows = logit_rows.data();
    in.n_logit_rows = static_cast<int32_t>(logit_rows.size());
    in.kv_base = kv_base;
    return in;
  }
};

// Block tables of steps that attend to nothing: block 0 for every position.
inline const int32_t* ZeroTable() {
  static const std::vector<int32_t> table(1024, 0);
  return table.data();
}

// A step of tokens at `positions` (each with the zero table).
inline Step StepAt(std::vector<int32_t> positions) {
  Step s;
  s.positions = std::move(positions);
  s.tokens.assign(s.positions.size(), 0);
  s.tables.assign(s.positions.size(), ZeroTable());
  return s;
}

// Runs `ops` inside RunStep (as the model issues every op) on a step of one
// token at position 0.
inline void InStep(Backend& be, const std::function<void()>& ops) {
  const Step s = StepAt({0});
  be.RunStep(s.Inputs(), [&](const StepViews&) { ops(); });
}

// ---- The table ----

struct Expected {
  Floats values;
  std::vector<double> scale;  // empty: |values|
};

struct OpCase {
  std::string name;
  bool bitwise = false;  // every backend memcmp-equal to the reference
  Tolerance tol;         // otherwise, on non-CPU backends
  int parts = 1;         // run returns `parts` equal-length parts (see top)
  std::function<Floats(Backend&)> run;
  std::function<Expected()> reference;
};

// sum |w[r] * x[t]| for each output of a MatMul (its tolerance's scale).
inline std::vector<double> AbsDot(const HostWeight& w, const Floats& x,
                           int64_t n_tokens) {
  std::vector<double> s(static_cast<size_t>(n_tokens * w.rows));
  for (int64_t r = 0; r < w.rows; ++r) {
    const Floats row = w.Row(r);
    for (int64_t t = 0; t < n_tokens; ++t) {
      double acc = 0;
      for (int64_t c = 0; c < w.cols; ++c) {
        acc += std::fabs(double{row[size_t(c)]} * x[size_t(t * w.cols + c)]);
      }
      s[size_t(t * w.rows + r)] = acc;
    }
  }
  return s;
}

inline std::vector<double> AbsOf(const Floats& v) {
  std::vector<double> s(v.size());
  for (size_t i = 0; i < v.size(); ++i) s[i] = std::fabs(double{v[i]});
  return s;
}

// -- Embed --

inline OpCase EmbedCase(GgmlType type, bool bitwise, Tolerance tol) {
  constexpr int64_t kRows = 50, kCols = 128;
  const std::vector<int32_t> tokens = {3, 49, 0, 3, 17, 48, 25};
  OpCase c;
  c.name = absl::StrCat("Embed_", TypeName(type));
  c.bitwise = bitwise;
  c.tol = tol;
  c.run = [=](Backend& be) {
    const HostWeight table = MakeWeight(type, kRows, kCols, 11);
    Dev d(be);
    const WeightView w = d.Weight(table);
    const int64_t n = static_cast<int64_t>(tokens.size());
    float* out = d.Output(n * kCols);
    Step s = StepAt(std::vector<int32_t>(tokens.size(), 0));
    s.tokens = tokens;
    be.RunStep(s.Inputs(), [&](const StepViews& v) {
      be.Embed(w, v.tokens, n, out);
    });
    return d.Read(out, n * kCols);
  };
  c.reference = [=] {
    const HostWeight table = MakeWeight(type, kRows, kCols, 11);
    const int64_t n = static_cast<int64_t>(tokens.size());
    Floats out(static_cast<size_t>(n * kCols));
    Embed(table.View(), tokens.data(), n, out.data(), kRefExec);
    return Expected{out, {}};
  };
  return c;
}

// -- RmsNorm --

// n_rows rows of dim; in place writes over x. Parts: inside RunStep, at once.
inline OpCase RmsNormCase(std::string name, int64_t n_rows, int64_t dim,
                   bool in_place) {
  constexpr float kEps = 1e-5f;
  const auto inputs = [=] {
    return std::make_pair(Uniform(n_rows * dim, -2, 2, uint32_t(dim + n_rows)),
                          Uniform(dim, 0.5f, 1.5f, uint32_t(dim)));
  };
  OpCase c;
  c.name = std::move(name);
  c.tol = kRmsNormTol;
  c.parts = 2;
  c.run = [=](Backend& be) {
    const auto [x, w] = inputs();
    Dev d(be);
    const float* dw = d.Upload(w);
    Floats parts[2];
    for (int p = 0; p < 2; ++p) {
      float* dx = d.Upload(x);
      float* out = in_place ? dx : d.Output(n_rows * dim);
      auto op = [&] { be.RmsNorm(dx, dw, n_rows, dim, kEps, out); };
      if (p == 0) InStep(be, op); else op();
      parts[p] = d.Read(out, n_rows * dim);
    }
    return Concat({parts[0], parts[1]});
  };
  c.reference = [=] {
    auto [x, w] = inputs();
    RmsNorm(x.data(), w.data(), n_rows, dim, kEps, x.data(), kRefExec);
    return Expected{x, {}};
  };
  return c;
}

// -- MatMul --

inline OpCase MatMulCase(GgmlType type, int64_t n_tokens, Tolerance tol) {
  constexpr int64_t kRows = 96, kCols = 256;
  OpCase c;
  c.name = absl::StrCat("MatMul_", TypeName(type), "_t", n_tokens);
  c.tol = tol;
  c.parts = 2;
  const uint32_t seed = uint32_t(n_tokens) * 7 + uint32_t(type);
  c.run = [=](Backend& be) {
    const HostWeight hw = MakeWeight(type, kRows, kCols, seed);
    const Floats x = Uniform(n_tokens * kCols, -1, 1, seed + 1);
    Dev d(be);
    const WeightView w = d.Weight(hw);
    const float* dx = d.MatMulInput(x, n_tokens, kCols);
    float* out[2] = {d.MatMulOutput(n_tokens, kRows),
                     d.MatMulOutput(n_tokens, kRows)};
    InStep(be, [&] { be.MatMul(w, dx, n_tokens, out[0]); });
    be.MatMul(w, dx, n_tokens, out[1]);
    return Concat({d.Read(out[0], n_tokens * kRows),
                   d.Read(out[1], n_tokens * kRows)});
  };
  c.reference = [=] {
    const HostWeight hw = MakeWeight(type, kRows, kCols, seed);
    const Floats x = Uniform(n_tokens * kCols, -1, 1, seed + 1);
    Floats out(static_cast<size_t>(n_tokens * kRows));
    MatMul(hw.View(), x.data(), n_tokens, out.data(), kRefExec);
    return Expected{out, AbsDot(hw, x, n_tokens)};
  };
  return c;
}

// -- AddBias --

inline OpCase AddBiasCase(int64_t n_rows, int64_t dim, bool in_place) {
  const auto inputs = [=] {
    return std::make_pair(Uniform(n_rows * dim, -100, 100, uint32_t(dim)),
                          Uniform(dim, -1, 1, uint32_t(dim + 1)));
  };
  OpCase c;
  c.name = absl::StrCat("AddBias_", n_rows, "x", dim, in_place ? "_in_place" : "");
  c.bitwise = true;
  c.tol = kBitwise;
  c.parts = 2;
  c.run = [=](Backend& be) {
    const auto [x, bias] = inputs();
    Dev d(be);
    const float* db = d.Upload(bias);
    Floats parts[2];
    for (int p = 0; p < 2; ++p) {
      float* dx = d.Upload(x);
      float* out = in_place ? dx : d.Output(n_rows * dim);
      auto op = [&] { be.AddBias(dx, db, n_rows, dim, out); };
      if (p == 0) InStep(be, op); else op();
      parts[p] = d.Read(out, n_rows * dim);
    }
    return Concat({parts[0], parts[1]});
  };
  c.reference = [=] {
    const auto [x, bias] = inputs();
    Floats out(x.size());
    AddBias(x.data(), bias.data(), n_rows, dim, out.data(), kRefExec);
    return Expected{out, {}};
  };
  return c;
}

// -- Rope --

inline const std::vector<int32_t> kRopePositions = {0, 3, 17, 100, 4095};

inline OpCase RopeCase(std::string name, RopeParams params, int32_t n_heads) {
  const int64_t n = static_cast<int64_t>(kRopePositions.size());
  const int64_t width = n * n_heads * params.head_dim;
  OpCase c;
  c.name = std::move(name);
  c.tol = kRopeTol;
  c.run = [=](Backend& be) {
    Dev d(be);
    float* x = d.Upload(Uniform(width, -2, 2, uint32_t(params.head_dim)));
    const Step s = StepAt(kRopePositions);
    be.RunStep(s.Inputs(), [&](const StepViews& v) {
      be.Rope(x, n, n_heads, v.placement.positions, params);
    });
    return d.Read(x, width);
  };
  c.reference = [=] {
    Floats x = Uniform(width, -2, 2, uint32_t(params.head_dim));
    Rope(x.data(), n, n_heads, kRopePositions.data(), params, kRefExec);
    return Expected{x, {}};
  };
  return c;
}

inline RopeParams RopeOf(RopeMode mode, int32_t head_dim, int32_t rot_dim,
                  float freq_base, float freq_scale) {
  RopeParams p;
  p.mode = mode;
  p.head_dim = head_dim;
  p.rot_dim = rot_dim;
  p.freq_base = freq_base;
  p.freq_scale = freq_scale;
  return p;
}

// -- KvWrite and Attention --

// A paged KV arena of two layers holding random f16 (earlier context), with
// shuffled disjoint block tables of sequences of `lengths` positions.
struct KvSetup {
  KvCacheView kv;  // base: null (set per backend)
  std::vector<uint16_t> arena;
  std::vector<std::vector<int32_t>> tables;

  int64_t Elems() const { return int64_t{kv.num_blocks} * kv.BlockElems(); }
};

inline KvSetup MakeKv(int32_t n_kv_heads, int32_t head_dim,
               const std::vector<int32_t>& lengths) {
  KvSetup s;
  s.kv.block_size = 16;
  s.kv.n_layers = 2;
  s.kv.n_kv_heads = n_kv_heads;
  s.kv.head_dim = head_dim;
  int32_t blocks = 0;
  for (int32_t len : lengths) blocks += (len + 15) / 16;
  s.kv.num_blocks = blocks + 4;  // some belong to nobody
  std::vector<int32_t> ids(static_cast<size_t>(s.kv.num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(uint32_t(head_dim)));
  size_t next = 0;
  for (int32_t len : lengths) {
    std::vector<int32_t> t;
    for (int32_t i = 0; i < (len + 15) / 16; ++i) t.push_back(ids[next++]);
    s.tables.push_back(std::move(t));
  }
  const Floats v = Uniform(s.Elems(), -1, 1, uint32_t(head_dim) + 5);
  s.arena.resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) s.arena[i] = FloatToHalf(v[i]);
  return s;
}

// (sequence, position) of each token of a batch.
using Batch = std::vector<std::pair<int32_t, int32_t>>;

inline Step StepOf(const KvSetup& s, const Batch& batch) {
  Step st;
  for (const auto& [seq, pos] : batch) {
    st.positions.push_back(pos);
    st.tables.push_back(s.tables[size_t(seq)].data());
    st.tokens.push_back(0);
  }
  return st;
}

// With a sliding window, the blocks wholly before every window of a
// sequence in `batch` become -1, as a store that freed them leaves them: a
// kernel that reads one fails.
inline void FreeBeforeWindows(KvSetup& s, const Batch& batch, int32_t window) {
  if (window <= 0) return;
  for (size_t seq = 0; seq < s.tables.size(); ++seq) {
    int32_t lo = INT32_MAX;
    for (const auto& [q, pos] : batch) {
      if (q == int32_t(seq)) lo = std::min(lo, WindowStart(pos, window));
    }
    for (int32_t i = 0; (i + 1) * s.kv.block_size <= lo; ++i) {
      s.tables[seq][size_t(i)] = -1;
    }
  }
}

inline TokenPlacement PlacementOf(const Step& st) {
  return {static_cast<int32_t>(st.positions.size()), st.positions.data(),
          st.tables.data()};
}

// Four sequences: a prefill chunk crossing a block boundary (0..20), a
// decode token after 77 positions of context, a chunk 30..34, a decode token
// at 250; lengths not multiples of the block size.
inline const std::vector<int32_t> kKvLengths = {21, 78, 35, 251};
inline Batch KvBatch() {
  Batch b;
  for (int32_t p = 0; p <= 20; ++p) b.push_back({0, p});
  b.push_back({1, 77});
  for (int32_t p = 30; p <= 34; ++p) b.push_back({2, p});
  b.push_back({3, 250});
  return b;
}

// KvWrite of layer 1 (then Attention if `attention`, over a sliding window
// if window > 0): returns the whole arena's f16 bits, or the attention
// output.
inline OpCase KvCase(int32_t n_heads, int32_t n_kv_heads, int32_t head_dim,
                     bool attention, int32_t window = 0) {
  const Batch batch = KvBatch();
  const int64_t n = static_cast<int64_t>(batch.size());
  const int64_t kv_row = int64_t{n_kv_heads} * head_dim;
  const int64_t q_row = int64_t{n_heads} * head_dim;
  const AttentionParams params{n_heads, 1.0f / std::sqrt(float(head_dim)),
                               window};
  const uint32_t seed = uint32_t(head_dim * 3 + n_heads);
  OpCase c;
  c.name = absl::StrCat(attention ? "Attention" : "KvWrite", "_h", n_heads,
                        "_kv", n_kv_heads, "_d", head_dim,
                        window > 0 ? absl::StrCat("_w", window) : "");
  c.bitwise = !attention;
  c.tol = attention ? kAttentionTol : kBitwise;
  c.run = [=](Backend& be) {
    KvSetup s = MakeKv(n_kv_heads, head_dim, kKvLengths);
    FreeBeforeWindows(s, batch, window);
    Dev d(be);
    s.kv.base = static_cast<uint16_t*>(
        d.UploadBytes(s.arena.data(), s.arena.size() * 2));
    const float* k = d.Upload(Uniform(n * kv_row, -1, 1, seed));
    const float* v = d.Upload(Uniform(n * kv_row, -1, 1, seed + 1));
    const float* q = d.Upload(Uniform(n * q_row, -3, 3, seed + 2));
    float* out = d.Output(n * q_row);
    Step st = StepOf(s, batch);
    st.kv_base = s.kv.base;
    be.RunStep(st.Inputs(), [&](const StepViews& views) {
      be.KvWrite(s.kv, 1, views.placement, k, v);
      if (attention) be.Attention(s.kv, 1, views.placement, q, params, out);
    });
    return attention ? d.Read(out, n * q_row) : d.ReadBits(s.kv.base, s.Elems());
  };
  c.reference = [=] {
    KvSetup s = MakeKv(n_kv_heads, head_dim, kKvLengths);
    FreeBeforeWindows(s, batch, window);
    s.kv.base = s.arena.data();
    const Floats k = Uniform(n * kv_row, -1, 1, seed);
    const Floats v = Uniform(n * kv_row, -1, 1, seed + 1);
    const Floats q = Uniform(n * q_row, -3, 3, seed + 2);
    const Step st = StepOf(s, batch);
    KvWrite(s.kv, 1, PlacementOf(st), k.data(), v.data(), kRefExec);
    if (!attention) return Expected{Floats(s.arena.begin(), s.arena.end()), {}};
    Floats out(static_cast<size_t>(n * q_row));
    Attention(s.kv, 1, PlacementOf(st), q.data(), params, out.data(), kRefExec);
    return Expected{out, {}};
  };
  return c;
}

// -- SwiGlu, Add, GatherRows --

inline OpCase SwiGluCase(int64_t n) {
  OpCase c;
  c.name = absl::StrCat("SwiGlu_n", n);
  c.tol = kSwiGluTol;
  c.parts = 2;
  c.run = [=](Backend& be) {
    Dev d(be);
    const float* g = d.Upload(Uniform(n, -20, 20, 1));
    const float* u = d.Upload(Uniform(n, -3, 3, 2));
    float* out[2] = {d.Output(n), d.Output(n)};
    InStep(be, [&] { be.SwiGlu(g, u, n, out[0]); });
    be.SwiGlu(g, u, n, out[1]);
    return Concat({d.Read(out[0], n), d.Read(out[1], n)});
  };
  c.reference = [=] {
    const Floats g = Uniform(n, -20, 20, 1), u = Uniform(n, -3, 3, 2);
    Floats out(static_cast<size_t>(n));
    SwiGlu(g.data(), u.data(), n, out.data(), kRefExec);
    return Expected{out, {}};
  };
  return c;
}

inline OpCase GeGluCase(int64_t n) {
  OpCase c;
  c.name = absl::StrCat("GeGlu_n", n);
  c.tol = kGeGluTol;
  c.parts = 2;
  c.run = [=](Backend& be) {
    Dev d(be);
    const float* g = d.Upload(Uniform(n, -12, 12, 1));
    const float* u = d.Upload(Uniform(n, -3, 3, 2));
    float* out[2] = {d.Output(n), d.Output(n)};
    InStep(be, [&] { be.GeGlu(g, u, n, out[0]); });
    be.GeGlu(g, u, n, out[1]);
    return Concat({d.Read(out[0], n), d.Read(out[1], n)});
  };
  c.reference = [=] {
    const Floats g = Uniform(n, -12, 12, 1), u = Uniform(n, -3, 3, 2);
    Floats out(static_cast<size_t>(n));
    GeGlu(g.data(), u.data(), n, out.data(), kRefExec);
    return Expected{out, {}};
  };
  return c;
}

// In place, as Gemma scales its embedding rows.
inline OpCase ScaleCase(int64_t n) {
  const float s = std::sqrt(640.0f);
  OpCase c;
  c.name = absl::StrCat("Scale_n", n, "_in_place");
  c.bitwise = true;
  c.tol = kBitwise;
  c.run = [=](Backend& be) {
    Dev d(be);
    float* x = d.Upload(Uniform(n, -50, 50, 6));
    InStep(be, [&] { be.Scale(x, s, n, x); });
    return d.Read(x, n);
  };
  c.reference = [=] {
    Floats x = Uniform(n, -50, 50, 6);
    Scale(x.data(), s, n, x.data(), kRefExec);
    return Expected{x, {}};
  };
  return c;
}

// alias: 0 out separate, 1 out == a, 2 out == b.
inline OpCase AddCase(int64_t n, int alias) {
  OpCase c;
  c.name = absl::StrCat("Add_n", n,
                        alias == 1 ? "_out_a" : alias == 2 ? "_out_b" : "");
  c.bitwise = true;
  c.tol = kBitwise;
  c.parts = 2;
  c.run = [=](Backend& be) {
    Dev d(be);
    Floats parts[2];
    for (int p = 0; p < 2; ++p) {
      float* a = d.Upload(Uniform(n, -100, 100, 3));
      float* b = d.Upload(Uniform(n, -1, 1, 4));
      float* out = alias == 1 ? a : alias == 2 ? b : d.Output(n);
      auto op = [&] { be.Add(a, b, n, out); };
      if (p == 0) InStep(be, op); else op();
      parts[p] = d.Read(out, n);
    }
    return Concat({parts[0], parts[1]});
  };
  c.reference = [=] {
    const Floats a = Uniform(n, -100, 100, 3), b = Uniform(n, -1, 1, 4);
    Floats out(static_cast<size_t>(n));
    Add(a.data(), b.data(), n, out.data(), kRefExec);
    return Expected{out, {}};
  };
  return c;
}

inline OpCase GatherRowsCase() {
  constexpr int64_t kSrcRows = 20, kDim = 96;
  const std::vector<int32_t> rows = {19, 0, 5, 5, 12};
  const int64_t n = static_cast<int64_t>(rows.size());
  OpCase c;
  c.name = "GatherRows";
  c.bitwise = true;
  c.tol = kBitwise;
  c.run = [=](Backend& be) {
    Dev d(be);
    const float* src = d.Upload(Uniform(kSrcRows * kDim, -5, 5, 9));
    float* out = d.Output(n * kDim);
    Step s = StepAt({0});
    s.logit_rows = rows;
    be.RunStep(s.Inputs(), [&](const StepViews& v) {
      be.GatherRows(src, v.logit_rows, v.n_logit_rows, kDim, out);
    });
    return d.Read(out, n * kDim);
  };
  c.reference = [=] {
    const Floats src = Uniform(kSrcRows * kDim, -5, 5, 9);
    Floats out;
    for (int32_t r : rows) {
      out.insert(out.end(), src.begin() + r * kDim, src.begin() + (r + 1) * kDim);
    }
    return Expected{out, {}};
  };
  return c;
}

}  // namespace kvsession::kernels::backend_ops

#endif  // KVSESSION_TESTS_KERNELS_BACKEND_OPS_CASES_H_
