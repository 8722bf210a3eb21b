// y = W x for quantized and float weights (K-quants: matmul_k.cc).
//
// Bitwise batch invariance by construction: every output (row r, token t) has
// its own 8-lane accumulator and sees the same operation sequence whatever
// tile computed it: for each 32-block b in order,
//   acc = fma(float(lane sums of q_w * q_a), d_w * d_a, acc)
// then a fixed horizontal sum, then (affine types) + sum_b fma(m_w, s_a).
// Tiles of different shapes are instantiations of one template, so they only
// differ in how many such sequences run side by side. Threads split rows and
// tokens, never a reduction.
//
// Work decomposition: each thread owns a rectangle of outputs (all rows x
// its share of the tokens for prefill, its share of the row panels x all
// tokens for decode) and quantizes its tokens' activations itself, so threads
// never wait on each other inside a call. Prefill walks panels of kPanelRows
// rows: a panel is unpacked once into an L1-sized buffer of int8 values + f32
// scales and all of the thread's tokens stream past it in kMr x kNr register
// tiles (weights unpacked once per thread and call, each activation block
// reused by kMr rows). Decode (<= 2 tokens) decodes each weight block in
// registers and uses it at once: there is nothing to amortize an unpack over.
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/check.h"
#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/qdot.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/simd.h"
#include "kernels/f16.h"

namespace kvsession::kernels {
namespace {

using matmul_internal::Align64;
using matmul_internal::Range;
using matmul_internal::Scratch;

constexpr int kMr = 4;                // rows per register tile
constexpr int kNr = 3;                // tokens per register tile
constexpr int kPanelRows = 16;        // rows unpacked together
constexpr int kFloatPanelRows = 4;    // rows dequantized together (f32 path)
constexpr int64_t kChunkTokens = 64;  // tokens per min-term buffer fill

thread_local Scratch tls_acts;
thread_local Scratch tls_panel;

// How the weight type meets the activations.
enum class Kind {
  kAffine,  // Q4_1, Q5_1: unsigned q in [0, 32), d and min; Q8_1 activations
  kSigned,  // Q4_0, Q5_0, Q8_0: signed q, d; Q8_0 activations
  kKQuant,  // Q4_K, Q5_K, Q6_K: Q8_K activations (matmul_k.cc)
  kFloat,   // everything else: dequantize and dot in f32
};

Kind KindOf(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1:
      return Kind::kAffine;
    case GgmlType::kQ4_0:
    case GgmlType::kQ5_0:
    case GgmlType::kQ8_0:
      return Kind::kSigned;
    default:
      return matmul_internal::IsKQuant(type) ? Kind::kKQuant : Kind::kFloat;
  }
}

// ---------------------------------------------------------------------------
// Register tile over an unpacked panel: R rows x T tokens over nb blocks.
// wq: first row of the tile (row stride nb blocks); wd: its scales in the
// panel's block-major layout (block stride kPanelRows); aq/ad: first token
// (token stride nb blocks). res[r * T + t] = reduced accumulator.

using TileFn = void (*)(const int8_t*, const float*, const int8_t*,
                        const float*, int64_t, float*);

template <int R, int T, bool kSignedW>
void TileDot(const int8_t* wq, const float* wd, const int8_t* aq,
             const float* ad, int64_t nb, float* res) {
  qdot::Acc acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = qdot::Zero();
  }
  for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const qdot::Prepared w =
          qdot::Prepare<kSignedW>(qdot::Load(wq + (r * nb + b) * kQk));
      const float dw = wd[b * kPanelRows + r];
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        acc[r][t] = qdot::Step<kSignedW>(w, qdot::Load(aq + (t * nb + b) * kQk),
                                         qdot::MulScales(dw, ad[t * nb + b]),
                                         acc[r][t]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) res[r * T + t] = qdot::Reduce(acc[r][t]);
  }
}

template <bool kSignedW, size_t... I>
constexpr std::array<TileFn, sizeof...(I)> MakeTiles(
    std::index_sequence<I...>) {
  return {&TileDot<static_cast<int>(I / kNr) + 1, static_cast<int>(I % kNr) + 1,
                   kSignedW>...};
}
constexpr auto kAffineTiles =
    MakeTiles<false>(std::make_index_sequence<kMr * kNr>());
constexpr auto kSignedTiles =
    MakeTiles<true>(std::make_index_sequence<kMr * kNr>());

// Affine min terms of NR rows x 8 tokens: msum[r][j] = sum over b in order
// of fma(m[r][b], s[b][j]); m is block-major (stride kPanelRows), s one
// 8-token group's sums, [b][8]. Rows run side by side only to overlap their
// fma latency chains.
template <int NR>
void MinTerms(const float* m, const float* s, int64_t nb, float* msum,
              int64_t msum_stride) {
#if KVS_CPU_AVX2
  __m256 v[NR];
#pragma GCC unroll 4
  for (int r = 0; r < NR; ++r) v[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m256 sv = _mm256_load_ps(s + b * simd::kLanes);
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) {
      v[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(m + b * kPanelRows + r), sv,
                             v[r]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < NR; ++r) _mm256_storeu_ps(msum + r * msum_stride, v[r]);
#else
  for (int r = 0; r < NR; ++r) {
    for (int j = 0; j < simd::kLanes; ++j) {
      float v = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        v = std::fma(m[b * kPanelRows + r], s[b * simd::kLanes + j], v);
      }
      msum[r * msum_stride + j] = v;
    }
  }
#endif
}
using MinTermsFn = void (*)(const float*, const float*, int64_t, float*,
                            int64_t);
constexpr MinTermsFn kMinTerms[4] = {&MinTerms<1>, &MinTerms<2>, &MinTerms<3>,
                                     &MinTerms<4>};

// ---------------------------------------------------------------------------

// Activations of one thread's tokens, quantized once per call: q[t][b][32],
// d[t][b] and, for affine weights, the Q8_1 sums grouped by 8 tokens,
// s8[t / 8][b][t % 8] (zero-padded), which MinTerms reads contiguously.
struct Acts {
  int64_t nb = 0;
  int8_t* q = nullptr;
  float* d = nullptr;
  float* s8 = nullptr;
};

Acts QuantizeActs(const float* x, int64_t n_tokens, int64_t cols,
                  bool with_sums) {
  Acts a;
  a.nb = cols / kQk;
  const int64_t groups = (n_tokens + simd::kLanes - 1) / simd::kLanes;
  const size_t q_bytes = Align64(static_cast<size_t>(n_tokens * a.nb * kQk));
  const size_t d_bytes =
      Align64(static_cast<size_t>(n_tokens * a.nb) * sizeof(float));
  const size_t s_bytes =
      with_sums
          ? static_cast<size_t>(groups * a.nb * simd::kLanes) * sizeof(float)
          : 0;
  auto* base = static_cast<uint8_t*>(tls_acts.Get(q_bytes + d_bytes + s_bytes));
  a.q = reinterpret_cast<int8_t*>(base);
  a.d = reinterpret_cast<float*>(base + q_bytes);
  if (with_sums) {
    a.s8 = reinterpret_cast<float*>(base + q_bytes + d_bytes);
    std::memset(a.s8, 0, s_bytes);  // padding tokens
  }
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t b = 0; b < a.nb; ++b) {
      uint16_t d_bits, s_bits;
      QuantizeBlockQ8(x + t * cols + b * kQk, a.q + (t * a.nb + b) * kQk,
                      &d_bits, with_sums ? &s_bits : nullptr,
                      Q8Rounding::kActivation);
      a.d[t * a.nb + b] = simd::F16ToF32(d_bits);
      if (with_sums) {
        a.s8[((t / simd::kLanes) * a.nb + b) * simd::kLanes +
             t % simd::kLanes] = simd::F16ToF32(s_bits);
      }
    }
  }
  return a;
}

// Decodes one weight row into the panel: q[b][32], and the row's scales and
// mins into block-major arrays, d[b * kPanelRows], m[b * kPanelRows].
template <typename Block>
void UnpackRow(const uint8_t* row, int64_t nb, int8_t* q, float* d, float* m) {
  const auto* x = reinterpret_cast<const Block*>(row);
  for (int64_t b = 0; b < nb; ++b) {
    qdot::Store(qdot::Decode(x[b]), q + b * kQk);
    d[b * kPanelRows] = simd::F16ToF32(x[b].d);
    m[b * kPanelRows] = qdot::Min(x[b]);
  }
}

// Few tokens (decode): no panel, each weight block is decoded in registers
// and used at once. R rows x T tokens; res[r * T + t] is the final output,
// min term included. Same per-output steps as TileDot + MinTerms.
template <typename Block, int R, int T>
void FusedRows(const uint8_t* row0, int64_t row_bytes, const Acts& a,
               int64_t nb, float* res) {
  constexpr bool kSignedW = !qdot::kAffine<Block>;
  qdot::Acc acc[R][T];
  float msum[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      acc[r][t] = qdot::Zero();
      msum[r][t] = 0.0f;
    }
  }
  for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Block& x = reinterpret_cast<const Block*>(row0 + r * row_bytes)[b];
      const qdot::Prepared w = qdot::Prepare<kSignedW>(qdot::Decode(x));
      float dw, mw;
      qdot::ScaleMin(x, &dw, &mw);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        acc[r][t] = qdot::Step<kSignedW>(
            w, qdot::Load(a.q + (t * nb + b) * kQk),
            qdot::MulScales(dw, a.d[t * nb + b]), acc[r][t]);
        if constexpr (!kSignedW) {
          msum[r][t] = std::fma(mw, a.s8[b * simd::kLanes + t], msum[r][t]);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      float v = qdot::Reduce(acc[r][t]);
      if constexpr (!kSignedW) v = v + msum[r][t];
      res[r * T + t] = v;
    }
  }
}

constexpr int kFusedMaxTokens = 2;
constexpr int64_t kPrefetchGroups = 3;

using UnpackFn = void (*)(const uint8_t*, int64_t, int8_t*, float*, float*);
using FusedFn = void (*)(const uint8_t*, int64_t, const Acts&, int64_t, float*);

struct QuantType {
  UnpackFn unpack;
  std::array<FusedFn, kMr * kFusedMaxTokens> fused;  // [R - 1][T - 1]
};

template <typename Block, size_t... I>
constexpr QuantType MakeQuantType(std::index_sequence<I...>) {
  return {&UnpackRow<Block>,
          {&FusedRows<Block, static_cast<int>(I / kFusedMaxTokens) + 1,
                      static_cast<int>(I % kFusedMaxTokens) + 1>...}};
}
template <typename Block>
constexpr QuantType kQuantType =
    MakeQuantType<Block>(std::make_index_sequence<kMr * kFusedMaxTokens>());

const QuantType& QuantTypeOf(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return kQuantType<BlockQ4_0>;
    case GgmlType::kQ4_1:
      return kQuantType<BlockQ4_1>;
    case GgmlType::kQ5_0:
      return kQuantType<BlockQ5_0>;
    case GgmlType::kQ5_1:
      return kQuantType<BlockQ5_1>;
    default:
      return kQuantType<BlockQ8_0>;
  }
}

void RunFused(const WeightView& w, const QuantType& qt, const Acts& acts,
              const Range& range, float* out) {
  const int64_t n_tok = range.t1 - range.t0;
  const auto* wbase = static_cast<const uint8_t*>(w.data);
  const auto row_bytes = static_cast<int64_t>(w.row_bytes);
  float res[kMr * kFusedMaxTokens];
  for (int64_t r0 = range.r0; r0 < range.r1; r0 += kMr) {
    const int nr = static_cast<int>(std::min<int64_t>(kMr, range.r1 - r0));
#if KVS_CPU_AVX2
    const uint8_t* end = wbase + range.r1 * row_bytes;
    // Weights stream from memory once; rows are short, so help the hardware
    // prefetcher by requesting the rows kPrefetchGroups groups ahead.
    const uint8_t* ahead = wbase + (r0 + kPrefetchGroups * kMr) * row_bytes;
    for (int64_t off = 0; off < kMr * row_bytes && ahead + off < end;
         off += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(ahead + off), _MM_HINT_T0);
    }
#endif
    qt.fused[(nr - 1) * kFusedMaxTokens + (n_tok - 1)](
        wbase + r0 * row_bytes, row_bytes, acts, acts.nb, res);
    for (int r = 0; r < nr; ++r) {
      for (int64_t t = 0; t < n_tok; ++t) {
        out[(range.t0 + t) * w.rows + r0 + r] = res[r * n_tok + t];
      }
    }
  }
}

void RunQuantized(const WeightView& w, const float* x, Kind kind,
                  const Range& range, float* out) {
  const bool affine = kind == Kind::kAffine;
  const int64_t n_tok = range.t1 - range.t0;
  const Acts acts = QuantizeActs(x + range.t0 * w.cols, n_tok, w.cols, affine);
  const QuantType& qt = QuantTypeOf(w.type);
  if (n_tok <= kFusedMaxTokens) return RunFused(w, qt, acts, range, out);

  const int64_t nb = acts.nb;
  const auto& tiles = affine ? kAffineTiles : kSignedTiles;
  const int64_t chunk_pad = std::min<int64_t>(
      kChunkTokens, (n_tok + simd::kLanes - 1) / simd::kLanes * simd::kLanes);
  const size_t q_bytes = Align64(static_cast<size_t>(kPanelRows * nb * kQk));
  const size_t f_bytes =
      Align64(static_cast<size_t>(kPanelRows * nb) * sizeof(float));
  auto* base = static_cast<uint8_t*>(tls_panel.Get(
      q_bytes + 2 * f_bytes +
      static_cast<size_t>(kPanelRows * chunk_pad) * sizeof(float)));
  auto* pq = reinterpret_cast<int8_t*>(base);
  auto* pd = reinterpret_cast<float*>(base + q_bytes);
  auto* pm = reinterpret_cast<float*>(base + q_bytes + f_bytes);
  auto* msum = reinterpret_cast<float*>(base + q_bytes + 2 * f_bytes);
  const auto* wbase = static_cast<const uint8_t*>(w.data);
  float res[kMr * kNr];

  for (int64_t p0 = range.r0; p0 < range.r1; p0 += kPanelRows) {
    // Unpack the panel once; it stays in L1 while every token streams by.
    const int64_t nr = std::min<int64_t>(kPanelRows, range.r1 - p0);
    for (int64_t r = 0; r < nr; ++r) {
      qt.unpack(wbase + (p0 + r) * static_cast<int64_t>(w.row_bytes), nb,
                pq + r * nb * kQk, pd + r, pm + r);
    }
    for (int64_t c0 = 0; c0 < n_tok; c0 += kChunkTokens) {
      const int64_t nt = std::min<int64_t>(kChunkTokens, n_tok - c0);
      if (affine) {
        for (int64_t j = 0; j < nt; j += simd::kLanes) {
          const float* s = acts.s8 + (c0 + j) * nb;  // group (c0 + j) / 8
          for (int64_t r = 0; r < nr; r += 4) {
            kMinTerms[std::min<int64_t>(4, nr - r) - 1](
                pm + r, s, nb, msum + r * chunk_pad + j, chunk_pad);
          }
        }
      }
      for (int64_t tt = 0; tt < nt; tt += kNr) {
        const int nt_tile = static_cast<int>(std::min<int64_t>(kNr, nt - tt));
        const int8_t* aq = acts.q + (c0 + tt) * nb * kQk;
        const float* ad = acts.d + (c0 + tt) * nb;
        for (int64_t rr = 0; rr < nr; rr += kMr) {
          const int nr_tile = static_cast<int>(std::min<int64_t>(kMr, nr - rr));
          tiles[(nr_tile - 1) * kNr + (nt_tile - 1)](pq + rr * nb * kQk,
                                                     pd + rr, aq, ad, nb, res);
          for (int r = 0; r < nr_tile; ++r) {
            for (int t = 0; t < nt_tile; ++t) {
              float v = res[r * nt_tile + t];
              if (affine) v = v + msum[(rr + r) * chunk_pad + tt + t];
              out[(range.t0 + c0 + tt + t) * w.rows + p0 + rr + r] = v;
            }
          }
        }
      }
    }
  }
}

void RunFloat(const WeightView& w, const float* x, const Range& range,
              float* out) {
  auto* buf = static_cast<float*>(tls_panel.Get(
      static_cast<size_t>(kFloatPanelRows * w.cols) * sizeof(float)));
  const auto* wbase = static_cast<const uint8_t*>(w.data);
  for (int64_t p0 = range.r0; p0 < range.r1; p0 += kFloatPanelRows) {
    const int64_t nr = std::min<int64_t>(kFloatPanelRows, range.r1 - p0);
    for (int64_t r = 0; r < nr; ++r) {
      DequantizeRow(w.type,
                    wbase + (p0 + r) * static_cast<int64_t>(w.row_bytes),
                    buf + r * w.cols, w.cols);
    }
    for (int64_t t = range.t0; t < range.t1; ++t) {
      for (int64_t r = 0; r < nr; ++r) {
        out[t * w.rows + p0 + r] =
            simd::DotF32(buf + r * w.cols, x + t * w.cols, w.cols);
      }
    }
  }
}

// MatMul through the path of `kind` (KindOf(w.type) but for MatMulViaF32).
void MatMulAs(const WeightView& w, const float* x, int64_t n_tokens, float* out,
              const CpuExec& exec, Kind kind,
              matmul_internal::KPath kpath = matmul_internal::KPath::kAuto) {
  if (n_tokens <= 0 || w.rows <= 0) return;
  const TypeTraits& traits = Traits(w.type);
  KVS_CHECK(w.cols > 0 && w.cols % traits.block_elems == 0)
      << "cols " << w.cols << " vs " << traits.name;
  KVS_CHECK(static_cast<int64_t>(w.row_bytes) >=
            w.cols / traits.block_elems * traits.block_bytes)
      << "row_bytes " << w.row_bytes;
  int64_t panel_rows = kPanelRows;
  if (kind == Kind::kFloat) panel_rows = kFloatPanelRows;
  if (kind == Kind::kKQuant) panel_rows = matmul_internal::kKPanelRows;
#pragma omp parallel num_threads(std::max(1, exec.n_threads))
  {
    const Range range = matmul_internal::ThreadRange(
        w, n_tokens, panel_rows, omp_get_thread_num(), omp_get_num_threads());
    if (range.r0 < range.r1 && range.t0 < range.t1) {
      if (kind == Kind::kFloat) {
        RunFloat(w, x, range, out);
      } else if (kind == Kind::kKQuant) {
        matmul_internal::RunKQuant(w, x, range, out, kpath);
      } else {
        RunQuantized(w, x, kind, range, out);
      }
    }
  }
}

}  // namespace

void MatMul(const WeightView& w, const float* x, int64_t n_tokens, float* out,
            const CpuExec& exec) {
  MatMulAs(w, x, n_tokens, out, exec, KindOf(w.type));
}

void matmul_internal::MatMulViaF32(const WeightView& w, const float* x,
                                   int64_t n_tokens, float* out,
                                   const CpuExec& exec) {
  MatMulAs(w, x, n_tokens, out, exec, Kind::kFloat);
}

void matmul_internal::MatMulKPath(const WeightView& w, const float* x,
                                  int64_t n_tokens, float* out,
                                  const CpuExec& exec, KPath path) {
  KVS_CHECK(IsKQuant(w.type)) << Traits(w.type).name;
  MatMulAs(w, x, n_tokens, out, exec, Kind::kKQuant, path);
}

}  // namespace kvsession::kernels
