// Tests per interface, not per backend (as llama.cpp's test-backend-ops): one
// table of op cases, each run through a `Backend&` on every registered
// backend ("cpu", and "cuda" where a device is present) and compared with the
// CPU reference kernels of kernels/cpu/ops.h called directly.
//
//  - The CPU backend must match its own reference bitwise in every case (it
//    calls the same kernels; only its thread count differs, and the CPU ops
//    never depend on it): so the table checks itself on any machine.
//  - Other backends must match within the case's stated tolerance, or
//    bitwise where the case says so.
//  - Cases with several parts return the same outputs computed several ways
//    on the backend under test (inside RunStep and at once; a token alone and
//    in batches of 5 and 64; a run the backend may fuse and the same ops
//    split by unrelated ops): the parts must be memcmp-equal on every
//    backend, and part 0 is compared with the reference.
//
// The CUDA backend runs with cuda_graphs off: the cases give different ops
// to steps of one shape, which a recorded step would replay.
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
#include "tests/kernels/backend_ops_cases.h"

namespace kvsession::kernels {
namespace {

using namespace backend_ops;  // NOLINT: the table's own helpers


// ---- Batch invariance: token t alone, in a batch of 5, in a batch of 64 ----

// Where the token of interest sits in each batch (-1) among rows of a pool
// of other tokens (their index in the pool).
struct Layout {
  std::vector<int> src;
  int64_t target = 0;
};
std::vector<Layout> Layouts() {
  std::vector<Layout> out;
  out.push_back({{-1}, 0});
  out.push_back({{0, 1, -1, 2, 3}, 2});
  Layout l64;
  for (int i = 0; i < 63; ++i) l64.src.push_back(i);
  l64.src.insert(l64.src.begin() + 37, -1);
  l64.target = 37;
  out.push_back(l64);
  return out;
}

// The rows of a batch: the target's row or pool rows, `width` floats each.
Floats BatchRows(const Layout& l, const Floats& target, const Floats& pool,
                 int64_t width) {
  Floats out;
  for (int s : l.src) {
    if (s < 0) {
      out.insert(out.end(), target.begin(), target.end());
    } else {
      out.insert(out.end(), pool.begin() + s * width,
                 pool.begin() + (s + 1) * width);
    }
  }
  return out;
}

Floats TargetRow(const Floats& all, const Layout& l, int64_t width) {
  return Floats(all.begin() + l.target * width,
                all.begin() + (l.target + 1) * width);
}

OpCase MatMulInvarianceCase(GgmlType type, Tolerance tol) {
  constexpr int64_t kRows = 160, kCols = 512;
  const uint32_t seed = 100 + uint32_t(type);
  OpCase c;
  c.name = absl::StrCat("Invariance_MatMul_", TypeName(type));
  c.tol = tol;
  c.parts = 3;
  c.run = [=](Backend& be) {
    const HostWeight hw = MakeWeight(type, kRows, kCols, seed);
    const Floats target = Uniform(kCols, -1, 1, seed + 1);
    const Floats pool = Uniform(63 * kCols, -1, 1, seed + 2);
    Dev d(be);
    const WeightView w = d.Weight(hw);
    Floats out;
    for (const Layout& l : Layouts()) {
      const int64_t n = static_cast<int64_t>(l.src.size());
      const float* x = d.MatMulInput(BatchRows(l, target, pool, kCols), n, kCols);
      float* y = d.MatMulOutput(n, kRows);
      InStep(be, [&] { be.MatMul(w, x, n, y); });
      const Floats row = TargetRow(d.Read(y, n * kRows), l, kRows);
      out.insert(out.end(), row.begin(), row.end());
    }
    return out;
  };
  c.reference = [=] {
    const HostWeight hw = MakeWeight(type, kRows, kCols, seed);
    const Floats target = Uniform(kCols, -1, 1, seed + 1);
    Floats out(kRows);
    MatMul(hw.View(), target.data(), 1, out.data(), kRefExec);
    return Expected{out, AbsDot(hw, target, 1)};
  };
  return c;
}

OpCase RmsNormInvarianceCase() {
  constexpr int64_t kDim = 4096;
  constexpr float kEps = 1e-6f;
  OpCase c;
  c.name = "Invariance_RmsNorm_d4096";
  c.tol = kRmsNormTol;
  c.parts = 3;
  c.run = [=](Backend& be) {
    const Floats target = Uniform(kDim, -2, 2, 1), pool = Uniform(63 * kDim, -9, 9, 2);
    Dev d(be);
    const float* w = d.Upload(Uniform(kDim, 0.5f, 1.5f, 3));
    Floats out;
    for (const Layout& l : Layouts()) {
      const int64_t n = static_cast<int64_t>(l.src.size());
      const float* x = d.Upload(BatchRows(l, target, pool, kDim));
      float* y = d.Output(n * kDim);
      InStep(be, [&] { be.RmsNorm(x, w, n, kDim, kEps, y); });
      const Floats row = TargetRow(d.Read(y, n * kDim), l, kDim);
      out.insert(out.end(), row.begin(), row.end());
    }
    return out;
  };
  c.reference = [=] {
    const Floats target = Uniform(kDim, -2, 2, 1), w = Uniform(kDim, 0.5f, 1.5f, 3);
    Floats out(kDim);
    RmsNorm(target.data(), w.data(), 1, kDim, kEps, out.data(), kRefExec);
    return Expected{out, {}};
  };
  return c;
}

OpCase AddBiasInvarianceCase() {
  constexpr int64_t kDim = 1000;
  OpCase c;
  c.name = "Invariance_AddBias";
  c.bitwise = true;
  c.tol = kBitwise;
  c.parts = 3;
  c.run = [=](Backend& be) {
    const Floats target = Uniform(kDim, -5, 5, 1), pool = Uniform(63 * kDim, -5, 5, 2);
    Dev d(be);
    const float* bias = d.Upload(Uniform(kDim, -1, 1, 3));
    Floats out;
    for (const Layout& l : Layouts()) {
      const int64_t n = static_cast<int64_t>(l.src.size());
      float* x = d.Upload(BatchRows(l, target, pool, kDim));
      InStep(be, [&] { be.AddBias(x, bias, n, kDim, x); });
      const Floats row = TargetRow(d.Read(x, n * kDim), l, kDim);
      out.insert(out.end(), row.begin(), row.end());
    }
    return out;
  };
  c.reference = [=] {
    const Floats target = Uniform(kDim, -5, 5, 1), bias = Uniform(kDim, -1, 1, 3);
    Floats out(kDim);
    AddBias(target.data(), bias.data(), 1, kDim, out.data(), kRefExec);
    return Expected{out, {}};
  };
  return c;
}

OpCase RopeInvarianceCase() {
  const RopeParams params = RopeOf(RopeMode::kNeox, 128, 64, 1e6f, 0.25f);
  constexpr int32_t kHeads = 4;
  constexpr int64_t kWidth = int64_t{kHeads} * 128;
  constexpr int32_t kPos = 1234;
  OpCase c;
  c.name = "Invariance_Rope_neox";
  c.tol = kRopeTol;
  c.parts = 3;
  c.run = [=](Backend& be) {
    const Floats target = Uniform(kWidth, -2, 2, 1), pool = Uniform(63 * kWidth, -2, 2, 2);
    Dev d(be);
    Floats out;
    for (const Layout& l : Layouts()) {
      const int64_t n = static_cast<int64_t>(l.src.size());
      float* x = d.Upload(BatchRows(l, target, pool, kWidth));
      std::vector<int32_t> positions;
      for (int s : l.src) positions.push_back(s < 0 ? kPos : (s * 37) % 3000);
      const Step st = StepAt(positions);
      be.RunStep(st.Inputs(), [&](const StepViews& v) {
        be.Rope(x, n, kHeads, v.placement.positions, params);
      });
      const Floats row = TargetRow(d.Read(x, n * kWidth), l, kWidth);
      out.insert(out.end(), row.begin(), row.end());
    }
    return out;
  };
  c.reference = [=] {
    Floats target = Uniform(kWidth, -2, 2, 1);
    const int32_t pos = kPos;
    Rope(target.data(), 1, kHeads, &pos, params, kRefExec);
    return Expected{target, {}};
  };
  return c;
}

// A decode token of sequence 1 at position 77 over a fixed arena (no
// KvWrite), alone, with 4 tokens of other sequences, and in a batch of 64
// with prefill chunks and a token at position 250 (more partitions, another
// max position).
OpCase AttentionInvarianceCase(int32_t kHeads, int32_t kKvHeads,
                               int32_t kHeadDim, int32_t window) {
  const int64_t kRow = int64_t{kHeads} * kHeadDim;
  const AttentionParams params{kHeads, 1.0f / std::sqrt(float(kHeadDim)),
                               window};
  const std::pair<int32_t, int32_t> target{1, 77};
  std::vector<Batch> batches;
  batches.push_back({target});
  batches.push_back({{0, 3}, {2, 31}, target, {3, 0}, {0, 20}});
  Batch b64;
  for (int32_t p = 0; p <= 34; ++p) b64.push_back({2, p});
  b64.push_back(target);
  for (int32_t p = 0; p <= 20; ++p) b64.push_back({0, p});
  b64.push_back({3, 250});
  for (int32_t p = 10; p <= 15; ++p) b64.push_back({1, p});
  batches.push_back(b64);
  const int64_t targets[3] = {0, 2, 35};
  Batch all;
  for (const Batch& b : batches) all.insert(all.end(), b.begin(), b.end());
  OpCase c;
  c.name = absl::StrCat("Invariance_Attention_d", kHeadDim, "_h", kHeads,
                        "_kv", kKvHeads,
                        window > 0 ? absl::StrCat("_w", window) : "");
  c.tol = kAttentionTol;
  c.parts = 3;
  c.run = [=](Backend& be) {
    KvSetup s = MakeKv(kKvHeads, kHeadDim, kKvLengths);
    FreeBeforeWindows(s, all, window);
    Dev d(be);
    s.kv.base = static_cast<uint16_t*>(
        d.UploadBytes(s.arena.data(), s.arena.size() * 2));
    const Floats tq = Uniform(kRow, -3, 3, 1), pool = Uniform(64 * kRow, -3, 3, 2);
    Floats out;
    for (size_t b = 0; b < 3; ++b) {
      const Batch& batch = batches[b];
      const int64_t n = static_cast<int64_t>(batch.size());
      Floats q = Floats(pool.begin(), pool.begin() + n * kRow);
      std::copy(tq.begin(), tq.end(), q.begin() + targets[b] * kRow);
      const float* dq = d.Upload(q);
      float* y = d.Output(n * kRow);
      Step st = StepOf(s, batch);
      st.kv_base = s.kv.base;
      be.RunStep(st.Inputs(), [&](const StepViews& v) {
        be.Attention(s.kv, 0, v.placement, dq, params, y);
      });
      const Floats all = d.Read(y, n * kRow);
      out.insert(out.end(), all.begin() + targets[b] * kRow,
                 all.begin() + (targets[b] + 1) * kRow);
    }
    return out;
  };
  c.reference = [=] {
    KvSetup s = MakeKv(kKvHeads, kHeadDim, kKvLengths);
    FreeBeforeWindows(s, all, window);
    s.kv.base = s.arena.data();
    const Floats tq = Uniform(kRow, -3, 3, 1);
    const Step st = StepOf(s, {target});
    Floats out(kRow);
    Attention(s.kv, 0, PlacementOf(st), tq.data(), params, out.data(), kRefExec);
    return Expected{out, {}};
  };
  return c;
}

// ---- Runs a backend may fuse, against the same ops split apart ----

// An op on scratch buffers between two ops keeps a backend from fusing them
// (kernels/op_record.h matches adjacent ops only).
struct Separator {
  float* a;
  float* b;
  float* out;
  void operator()(Backend& be) const { be.Add(a, b, 4, out); }
};
Separator MakeSeparator(Dev& d) {
  return {d.Upload(Floats(4, 1.0f)), d.Upload(Floats(4, 2.0f)), d.Output(4)};
}

// Add(x, r -> x) RmsNorm(x -> s) MatMul q, k, v of s, then s overwritten
// (so a backend may leave it unwritten): x, q, k, v, fused vs split.
OpCase FusedAddNormMatMulsCase(int64_t n) {
  constexpr int64_t kDim = 256, kQ = 256, kKv = 64;
  constexpr float kEps = 1e-5f;
  OpCase c;
  c.name = absl::StrCat("Fused_AddNormMatMuls_t", n);
  c.tol = kMatMulF16Tol;
  c.parts = 2;
  const auto weights = [] {
    return std::make_tuple(MakeWeight(GgmlType::kF16, kQ, kDim, 1),
                           MakeWeight(GgmlType::kF16, kKv, kDim, 2),
                           MakeWeight(GgmlType::kF16, kKv, kDim, 3));
  };
  c.run = [=](Backend& be) {
    const auto [wq, wk, wv] = weights();
    Dev d(be);
    const std::vector<WeightView> ws = d.Weights({&wq, &wk, &wv});
    const float* norm = d.Upload(Uniform(kDim, 0.5f, 1.5f, 4));
    const float* zeros = d.Upload(Floats(size_t(n * kDim), 0.0f));
    const Separator sep = MakeSeparator(d);
    Floats parts[2];
    for (int p = 0; p < 2; ++p) {
      const bool split = p == 1;
      float* x = d.MatMulInput(Uniform(n * kDim, -2, 2, 5), n, kDim);
      const float* r = d.Upload(Uniform(n * kDim, -1, 1, 6));
      float* s = d.MatMulInput({}, n, kDim);
      float* outs[3] = {d.MatMulOutput(n, kQ), d.MatMulOutput(n, kKv),
                        d.MatMulOutput(n, kKv)};
      InStep(be, [&] {
        be.Add(x, r, n * kDim, x);
        if (split) sep(be);
        be.RmsNorm(x, norm, n, kDim, kEps, s);
        for (int i = 0; i < 3; ++i) {
          if (split) sep(be);
          be.MatMul(ws[size_t(i)], s, n, outs[i]);
        }
        if (split) sep(be);
        be.Add(zeros, zeros, n * kDim, s);
      });
      parts[p] = Concat({d.Read(x, n * kDim), d.Read(outs[0], n * kQ),
                         d.Read(outs[1], n * kKv), d.Read(outs[2], n * kKv)});
    }
    return Concat({parts[0], parts[1]});
  };
  c.reference = [=] {
    const auto [wq, wk, wv] = weights();
    const Floats norm = Uniform(kDim, 0.5f, 1.5f, 4);
    Floats x = Uniform(n * kDim, -2, 2, 5);
    const Floats r = Uniform(n * kDim, -1, 1, 6);
    Add(x.data(), r.data(), n * kDim, x.data(), kRefExec);
    Floats s(x.size());
    RmsNorm(x.data(), norm.data(), n, kDim, kEps, s.data(), kRefExec);
    Expected e{x, AbsOf(x)};
    for (const HostWeight* w : {&wq, &wk, &wv}) {
      Floats y(static_cast<size_t>(n * w->rows));
      MatMul(w->View(), s.data(), n, y.data(), kRefExec);
      const std::vector<double> scale = AbsDot(*w, s, n);
      e.values.insert(e.values.end(), y.begin(), y.end());
      e.scale.insert(e.scale.end(), scale.begin(), scale.end());
    }
    return e;
  };
  return c;
}

// SwiGlu(gate, up -> gate) MatMul(down, gate -> out), then gate overwritten.
OpCase FusedSwiGluMatMulCase(int64_t n) {
  constexpr int64_t kFfn = 512, kDim = 128;
  OpCase c;
  c.name = absl::StrCat("Fused_SwiGluMatMul_t", n);
  c.tol = kMatMulF16Tol;
  c.parts = 2;
  c.run = [=](Backend& be) {
    const HostWeight hw = MakeWeight(GgmlType::kF16, kDim, kFfn, 7);
    Dev d(be);
    const WeightView w = d.Weight(hw);
    const float* zeros = d.Upload(Floats(size_t(n * kFfn), 0.0f));
    const Separator sep = MakeSeparator(d);
    Floats parts[2];
    for (int p = 0; p < 2; ++p) {
      float* gate = d.MatMulInput(Uniform(n * kFfn, -8, 8, 8), n, kFfn);
      const float* up = d.Upload(Uniform(n * kFfn, -3, 3, 9));
      float* out = d.MatMulOutput(n, kDim);
      InStep(be, [&] {
        be.SwiGlu(gate, up, n * kFfn, gate);
        if (p == 1) sep(be);
        be.MatMul(w, gate, n, out);
        if (p == 1) sep(be);
        be.Add(zeros, zeros, n * kFfn, gate);
      });
      parts[p] = d.Read(out, n * kDim);
    }
    return Concat({parts[0], parts[1]});
  };
  c.reference = [=] {
    const HostWeight hw = MakeWeight(GgmlType::kF16, kDim, kFfn, 7);
    Floats gate = Uniform(n * kFfn, -8, 8, 8);
    const Floats up = Uniform(n * kFfn, -3, 3, 9);
    SwiGlu(gate.data(), up.data(), n * kFfn, gate.data(), kRefExec);
    Floats out(static_cast<size_t>(n * kDim));
    MatMul(hw.View(), gate.data(), n, out.data(), kRefExec);
    return Expected{out, AbsDot(hw, gate, n)};
  };
  return c;
}

// Rope(q) Rope(k) KvWrite(k, v): q, k and the arena, fused vs split.
OpCase FusedRopeKvWriteCase() {
  constexpr int32_t kHeads = 8, kKvHeads = 2, kHeadDim = 64;
  const RopeParams rope = RopeOf(RopeMode::kNeox, kHeadDim, kHeadDim, 1e4f, 1.0f);
  const Batch batch = KvBatch();
  const int64_t n = static_cast<int64_t>(batch.size());
  const int64_t q_row = int64_t{kHeads} * kHeadDim;
  const int64_t kv_row = int64_t{kKvHeads} * kHeadDim;
  OpCase c;
  c.name = "Fused_RopeKvWrite";
  c.tol = kRopeTol;
  c.parts = 2;
  c.run = [=](Backend& be) {
    Dev d(be);
    const Separator sep = MakeSeparator(d);
    Floats parts[2];
    for (int p = 0; p < 2; ++p) {
      KvSetup s = MakeKv(kKvHeads, kHeadDim, kKvLengths);
      s.kv.base = static_cast<uint16_t*>(
          d.UploadBytes(s.arena.data(), s.arena.size() * 2));
      float* q = d.Upload(Uniform(n * q_row, -2, 2, 1));
      float* k = d.Upload(Uniform(n * kv_row, -2, 2, 2));
      const float* v = d.Upload(Uniform(n * kv_row, -2, 2, 3));
      Step st = StepOf(s, batch);
      st.kv_base = s.kv.base;
      be.RunStep(st.Inputs(), [&](const StepViews& views) {
        be.Rope(q, n, kHeads, views.placement.positions, rope);
        if (p == 1) sep(be);
        be.Rope(k, n, kKvHeads, views.placement.positions, rope);
        if (p == 1) sep(be);
        be.KvWrite(s.kv, 0, views.placement, k, v);
      });
      parts[p] = Concat({d.Read(q, n * q_row), d.Read(k, n * kv_row),
                         d.ReadBits(s.kv.base, s.Elems())});
    }
    return Concat({parts[0], parts[1]});
  };
  c.reference = [=] {
    KvSetup s = MakeKv(kKvHeads, kHeadDim, kKvLengths);
    s.kv.base = s.arena.data();
    Floats q = Uniform(n * q_row, -2, 2, 1);
    Floats k = Uniform(n * kv_row, -2, 2, 2);
    const Floats v = Uniform(n * kv_row, -2, 2, 3);
    const Step st = StepOf(s, batch);
    Rope(q.data(), n, kHeads, st.positions.data(), rope, kRefExec);
    Rope(k.data(), n, kKvHeads, st.positions.data(), rope, kRefExec);
    KvWrite(s.kv, 0, PlacementOf(st), k.data(), v.data(), kRefExec);
    // The cache holds f16 bits: compare them exactly (a 1-ulp f32 Rope
    // difference may still flip an f16 rounding; allow one f16 step there).
    Floats arena(s.arena.begin(), s.arena.end());
    Expected e{Concat({q, k}), {}};
    e.scale = AbsOf(e.values);
    e.values.insert(e.values.end(), arena.begin(), arena.end());
    // f16 bits as floats: neighbouring values differ by 1; scale such that
    // atol + rtol * scale allows a difference of 1.
    e.scale.insert(e.scale.end(), arena.size(), 1.0 / kRopeTol.rtol);
    return e;
  };
  return c;
}

std::vector<OpCase> MakeCases() {
  std::vector<OpCase> c;
  c.push_back(EmbedCase(GgmlType::kF16, /*bitwise=*/true, kBitwise));
  c.push_back(EmbedCase(GgmlType::kQ8_0, /*bitwise=*/false, kEmbedQuantTol));
  c.push_back(RmsNormCase("RmsNorm_d64", 9, 64, false));
  c.push_back(RmsNormCase("RmsNorm_d4096", 5, 4096, false));
  // Per head (Qwen3's q_norm): 6 tokens x 8 heads of 128, in place.
  c.push_back(RmsNormCase("RmsNorm_per_head_in_place", 6 * 8, 128, true));
  c.push_back(RmsNormCase("RmsNorm_d4096_in_place", 3, 4096, true));
  const std::pair<GgmlType, Tolerance> kMatMulTypes[] = {
      {GgmlType::kF16, kMatMulF16Tol},
      {GgmlType::kBF16, kMatMulBf16Tol},
      {GgmlType::kQ8_0, kMatMulQuantTol},
      {GgmlType::kQ4_1, kMatMulQuantTol}};
  for (const auto& [type, tol] : kMatMulTypes) {
    for (int64_t n : {1, 7, 64}) c.push_back(MatMulCase(type, n, tol));
  }
  c.push_back(AddBiasCase(7, 96, false));
  c.push_back(AddBiasCase(33, 1000, true));
  c.push_back(RopeCase("Rope_normal",
                       RopeOf(RopeMode::kNormal, 64, 64, 1e4f, 1.0f), 4));
  c.push_back(RopeCase("Rope_neox",
                       RopeOf(RopeMode::kNeox, 64, 64, 1e4f, 1.0f), 4));
  c.push_back(RopeCase("Rope_normal_partial_scaled",
                       RopeOf(RopeMode::kNormal, 128, 32, 5e5f, 0.5f), 3));
  c.push_back(RopeCase("Rope_neox_partial_scaled",
                       RopeOf(RopeMode::kNeox, 128, 64, 1e6f, 0.25f), 3));
  for (bool attention : {false, true}) {
    c.push_back(KvCase(8, 2, 64, attention));   // GQA 4
    c.push_back(KvCase(6, 2, 128, attention));  // GQA 3
    c.push_back(KvCase(4, 1, 256, attention));  // Gemma 3 270M
  }
  c.push_back(KvCase(4, 1, 256, true, 32));  // sliding window
  c.push_back(KvCase(8, 2, 64, true, 20));
  c.push_back(SwiGluCase(3 * 1000 + 7));
  c.push_back(GeGluCase(3 * 1000 + 7));
  c.push_back(ScaleCase(4099));
  c.push_back(AddCase(4099, 0));
  c.push_back(AddCase(4099, 1));
  c.push_back(AddCase(4099, 2));
  c.push_back(GatherRowsCase());
  c.push_back(MatMulInvarianceCase(GgmlType::kF16, kMatMulF16Tol));
  c.push_back(MatMulInvarianceCase(GgmlType::kBF16, kMatMulBf16Tol));
  c.push_back(MatMulInvarianceCase(GgmlType::kQ8_0, kMatMulQuantTol));
  c.push_back(RmsNormInvarianceCase());
  c.push_back(RopeInvarianceCase());
  c.push_back(AttentionInvarianceCase(8, 2, 128, 0));
  c.push_back(AttentionInvarianceCase(4, 1, 256, 0));
  c.push_back(AttentionInvarianceCase(4, 1, 256, 24));
  c.push_back(AddBiasInvarianceCase());
  c.push_back(FusedAddNormMatMulsCase(7));
  c.push_back(FusedAddNormMatMulsCase(70));
  c.push_back(FusedSwiGluMatMulCase(7));
  c.push_back(FusedRopeKvWriteCase());
  return c;
}

const std::vector<OpCase>& Cases() {
  static const std::vector<OpCase>* cases = new std::vector<OpCase>(MakeCases());
  return *cases;
}

std::vector<std::string> CaseNames() {
  std::vector<std::string> names;
  for (const OpCase& c : Cases()) names.push_back(c.name);
  return names;
}

const OpCase& CaseNamed(const std::string& name) {
  for (const OpCase& c : Cases()) {
    if (c.name == name) return c;
  }
  ADD_FAILURE() << "no case " << name;
  std::abort();
}

// ---- Comparison ----

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

void ExpectBitwise(const Floats& got, const Floats& want,
                   const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int64_t bad = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i) {
    if (Bits(got[i]) != Bits(want[i]) && bad++ == 0) {
      first = absl::StrCat("index ", i, ": got ", got[i], " (0x",
                           absl::Hex(Bits(got[i])), ") want ", want[i], " (0x",
                           absl::Hex(Bits(want[i])), ")");
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size()
                    << " elements differ; first at " << first;
}

void ExpectClose(const Floats& got, const Expected& want, Tolerance tol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.values.size()) << what;
  double worst = 0;
  size_t worst_i = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double w = want.values[i];
    const double scale = want.scale.empty() ? std::fabs(w) : want.scale[i];
    double r = std::fabs(double{got[i]} - w) / (tol.atol + tol.rtol * scale);
    if (got[i] == want.values[i]) r = 0;  // also equal infinities
    if (!(r <= 1e30)) r = 1e30;           // NaN
    if (r > worst) {
      worst = r;
      worst_i = i;
    }
  }
  EXPECT_LE(worst, 1.0) << what << ": worst at index " << worst_i << ": got "
                        << got[worst_i] << " want " << want.values[worst_i]
                        << " (ratio to tolerance " << worst << ")";
}

// ---- The tests ----

class BackendOpsTest
    : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {
 protected:
  void SetUp() override {
    BackendOptions o;
    o.device = std::get<0>(GetParam());
    o.n_threads = 3;
    o.cuda_graphs = false;
    absl::StatusOr<std::unique_ptr<Backend>> b = CreateBackend(o);
    if (!b.ok()) {
      ASSERT_NE(o.device, "cpu") << b.status();
      GTEST_SKIP() << "no " << o.device << " backend: " << b.status();
    }
    backend_ = *std::move(b);
  }
  std::unique_ptr<Backend> backend_;
};

TEST_P(BackendOpsTest, MatchesCpuReference) {
  const OpCase& c = CaseNamed(std::get<1>(GetParam()));
  const bool cpu = backend_->name() == "cpu";
  const Floats got = c.run(*backend_);
  ASSERT_EQ(got.size() % size_t(c.parts), 0u);
  const size_t len = got.size() / size_t(c.parts);
  const Floats first(got.begin(), got.begin() + len);
  for (int p = 1; p < c.parts; ++p) {
    ExpectBitwise(Floats(got.begin() + p * len, got.begin() + (p + 1) * len),
                  first, absl::StrCat(c.name, ": part ", p, " vs part 0"));
  }
  const Expected want = c.reference();
  if (c.bitwise || cpu) {
    ExpectBitwise(first, want.values, c.name + " vs the CPU reference");
  } else {
    ExpectClose(first, want, c.tol, c.name + " vs the CPU reference");
  }
}

std::string ParamName(
    const ::testing::TestParamInfo<BackendOpsTest::ParamType>& info) {
  return std::get<1>(info.param);
}

// One instantiation per backend, so that a backend's cases can be selected
// by name (tests/kernels/CMakeLists.txt registers cuda/* again as gpu).
INSTANTIATE_TEST_SUITE_P(cpu, BackendOpsTest,
                         ::testing::Combine(::testing::Values("cpu"),
                                            ::testing::ValuesIn(CaseNames())),
                         ParamName);
INSTANTIATE_TEST_SUITE_P(cuda, BackendOpsTest,
                         ::testing::Combine(::testing::Values("cuda"),
                                            ::testing::ValuesIn(CaseNames())),
                         ParamName);

// The table itself: every op of the interface is covered.
TEST(BackendOpsTableTest, CoversEveryOp) {
  const char* ops[] = {"Embed_",  "RmsNorm_", "MatMul_",  "AddBias_",
                       "Rope_",   "KvWrite_", "Attention_", "SwiGlu_",
                       "Add_",    "GatherRows"};
  for (const char* op : ops) {
    bool found = false;
    for (const OpCase& c : Cases()) found = found || c.name.rfind(op, 0) == 0;
    EXPECT_TRUE(found) << op;
  }
}

}  // namespace
}  // namespace kvsession::kernels
