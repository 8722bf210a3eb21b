// y = W x for K-quant weights (Q4_K, Q5_K, Q6_K) against activations
// quantized per token to Q8_K by one routine in prefill and decode.
//
// Bitwise batch invariance as in matmul.cc: every output (row r, token t)
// runs the same sequence whatever tile computed it: for each super-block b in
// order, exact integer sums (qdot_k::Sums) and one scalar KStep into a single
// f32 accumulator. Tiles of different shapes only differ in how many such
// sequences run side by side; threads split rows and tokens (ThreadRange).
//
// Prefill unpacks a panel of kKPanelRows rows once per thread and call and
// streams the thread's tokens past it in kKMr x kKNr tiles. Decode (<=
// kKFusedMaxTokens tokens) decodes each weight super-block in registers
// (qdot_k::FusedSums) and shares it between the tokens, nothing stored; both
// produce the same integers, hence the same bits (KPath selects a path for
// tests and benchmarks).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/qdot_k.h"
#include "kernels/cpu/quant_blocks.h"

namespace kvsession::kernels::matmul_internal {
namespace {

using qdot_k::KSums;
using qdot_k::KUnpacked;

constexpr int kKMr = 3;  // rows per register tile (divides kKPanelRows)
constexpr int kKNr = 3;  // tokens per register tile
static_assert(kKPanelRows % kKMr == 0);

thread_local Scratch tls_k_acts;
thread_local Scratch tls_k_panel;

// q8[t * nb + b]: super-block b of token t.
const BlockQ8K* QuantizeActs(const float* x, int64_t n_tokens, int64_t cols) {
  const int64_t nb = cols / kQkK;
  auto* q8 = static_cast<BlockQ8K*>(
      tls_k_acts.Get(static_cast<size_t>(n_tokens * nb) * sizeof(BlockQ8K)));
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t b = 0; b < nb; ++b) {
      QuantizeBlockQ8K(x + t * cols + b * kQkK, q8 + t * nb + b);
    }
  }
  return q8;
}

// R rows x T tokens of an unpacked panel (row stride nb super-blocks) over
// all nb super-blocks; res[r * T + t] is the final output.
template <typename Block, int R, int T>
void TileK(const KUnpacked* w, const BlockQ8K* a, int64_t nb, float* res) {
  float acc[R * T] = {};
  for (int64_t b = 0; b < nb; ++b) {
    KSums s[R * T];
    qdot_k::Sums<R, T>(w + b, nb, a + b, nb, s);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        acc[r * T + t] = qdot_k::KStep<Block>(w[r * nb + b], a[t * nb + b].d,
                                              s[r * T + t], acc[r * T + t]);
      }
    }
  }
  for (int i = 0; i < R * T; ++i) res[i] = acc[i];
}

// One row, T tokens, each super-block unpacked to a KUnpacked and used at
// once (the decode path before FusedK; kept for KPath::kUnpackOne).
template <typename Block, int T>
void UnpackOneK(const uint8_t* row, int64_t /*row_bytes*/, const BlockQ8K* a,
                int64_t nb, float* res) {
  const auto* x = reinterpret_cast<const Block*>(row);
  KUnpacked u;
  float acc[T] = {};
  for (int64_t b = 0; b < nb; ++b) {
    qdot_k::Unpack(x[b], &u);
    KSums s[T];
    qdot_k::Sums<1, T>(&u, 0, a + b, nb, s);
    for (int t = 0; t < T; ++t) {
      acc[t] = qdot_k::KStep<Block>(u, a[t * nb + b].d, s[t], acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) res[t] = acc[t];
}

// R rows (row_bytes apart) x T tokens, weights decoded in registers
// (flatten: FusedSums inlined, its sums kept in registers).
template <typename Block, int R, int T>
[[gnu::flatten]] void FusedK(const uint8_t* row, int64_t row_bytes,
                             const BlockQ8K* a, int64_t nb, float* res) {
  float acc[R * T] = {};
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* wb = row + b * static_cast<int64_t>(sizeof(Block));
    KSums s[R * T];
    qdot_k::FusedSums<Block, R, T>(wb, row_bytes, a + b, nb, s);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const auto& xb = *reinterpret_cast<const Block*>(wb + r * row_bytes);
      const float d = qdot_k::BlockD(xb);
      const float dmin = qdot_k::BlockDmin(xb);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        acc[r * T + t] = qdot_k::KStep<Block>(d, dmin, a[t * nb + b].d,
                                              s[r * T + t], acc[r * T + t]);
      }
    }
  }
  for (int i = 0; i < R * T; ++i) res[i] = acc[i];
}

constexpr int kKFusedRows = 1;    // rows per fused tile (2 measured no faster)
constexpr int kKFusedTokens = 4;  // tokens per fused tile

using TileFn = void (*)(const KUnpacked*, const BlockQ8K*, int64_t, float*);
using FusedFn = void (*)(const uint8_t*, int64_t, const BlockQ8K*, int64_t,
                         float*);
using UnpackFn = void (*)(const uint8_t*, int64_t, KUnpacked*);

template <typename Block>
void UnpackRow(const uint8_t* row, int64_t nb, KUnpacked* u) {
  const auto* x = reinterpret_cast<const Block*>(row);
  for (int64_t b = 0; b < nb; ++b) qdot_k::Unpack(x[b], u + b);
}

struct KType {
  UnpackFn unpack;
  std::array<TileFn, kKMr * kKNr> tiles;                   // [R - 1][T - 1]
  std::array<FusedFn, kKFusedRows * kKFusedTokens> fused;  // [R - 1][T - 1]
  std::array<FusedFn, kKFusedTokens> unpack_one;           // [T - 1]
};

template <typename Block, size_t... I, size_t... J, size_t... K>
constexpr KType MakeKType(std::index_sequence<I...>, std::index_sequence<J...>,
                          std::index_sequence<K...>) {
  return {&UnpackRow<Block>,
          {&TileK<Block, static_cast<int>(I / kKNr) + 1,
                  static_cast<int>(I % kKNr) + 1>...},
          {&FusedK<Block, static_cast<int>(J / kKFusedTokens) + 1,
                   static_cast<int>(J % kKFusedTokens) + 1>...},
          {&UnpackOneK<Block, static_cast<int>(K) + 1>...}};
}
template <typename Block>
constexpr KType kKType =
    MakeKType<Block>(std::make_index_sequence<kKMr * kKNr>(),
                     std::make_index_sequence<kKFusedRows * kKFusedTokens>(),
                     std::make_index_sequence<kKFusedTokens>());

const KType& KTypeOf(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_K:
      return kKType<BlockQ4K>;
    case GgmlType::kQ5_K:
      return kKType<BlockQ5K>;
    default:
      return kKType<BlockQ6K>;
  }
}

// Rows in tiles of kKFusedRows, tokens in groups of kKFusedTokens (decode
// has one group); each row's bytes stream from memory once per group.
void RunFused(const WeightView& w, const KType& kt, const BlockQ8K* acts,
              const Range& range, bool unpack_one, float* out) {
  const int64_t n_tok = range.t1 - range.t0;
  const int64_t nb = w.cols / kQkK;
  const auto* wbase = static_cast<const uint8_t*>(w.data);
  const auto row_bytes = static_cast<int64_t>(w.row_bytes);
  const int64_t step = unpack_one ? 1 : kKFusedRows;
  float res[kKFusedRows * kKFusedTokens];
  for (int64_t r0 = range.r0; r0 < range.r1; r0 += step) {
    const int nr = static_cast<int>(std::min<int64_t>(step, range.r1 - r0));
#if KVS_CPU_AVX2
    // Help the hardware prefetcher with the rows kKPrefetchRows ahead.
    constexpr int64_t kKPrefetchRows = 2;
    const uint8_t* end = wbase + range.r1 * row_bytes;
    const uint8_t* ahead = wbase + (r0 + kKPrefetchRows) * row_bytes;
    for (int64_t off = 0; off < nr * row_bytes && ahead + off < end;
         off += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(ahead + off), _MM_HINT_T0);
    }
#endif
    for (int64_t t0 = 0; t0 < n_tok; t0 += kKFusedTokens) {
      const int nt =
          static_cast<int>(std::min<int64_t>(kKFusedTokens, n_tok - t0));
      const FusedFn fn = unpack_one
                             ? kt.unpack_one[nt - 1]
                             : kt.fused[(nr - 1) * kKFusedTokens + (nt - 1)];
      fn(wbase + r0 * row_bytes, row_bytes, acts + t0 * nb, nb, res);
      for (int r = 0; r < nr; ++r) {
        for (int t = 0; t < nt; ++t) {
          out[(range.t0 + t0 + t) * w.rows + r0 + r] = res[r * nt + t];
        }
      }
    }
  }
}

}  // namespace

bool IsKQuant(GgmlType type) {
  return type == GgmlType::kQ4_K || type == GgmlType::kQ5_K ||
         type == GgmlType::kQ6_K;
}

void RunKQuant(const WeightView& w, const float* x, const Range& range,
               float* out, KPath path) {
  const int64_t n_tok = range.t1 - range.t0;
  const int64_t nb = w.cols / kQkK;
  const BlockQ8K* acts = QuantizeActs(x + range.t0 * w.cols, n_tok, w.cols);
  const KType& kt = KTypeOf(w.type);
  if (path == KPath::kAuto) {
    path = n_tok <= kKFusedMaxTokens ? KPath::kFused : KPath::kPanel;
  }
  if (path != KPath::kPanel) {
    return RunFused(w, kt, acts, range, path == KPath::kUnpackOne, out);
  }

  auto* panel = static_cast<KUnpacked*>(tls_k_panel.Get(
      static_cast<size_t>(kKPanelRows * nb) * sizeof(KUnpacked)));
  const auto* wbase = static_cast<const uint8_t*>(w.data);
  float res[kKMr * kKNr];
  for (int64_t p0 = range.r0; p0 < range.r1; p0 += kKPanelRows) {
    // Unpack the panel once; it stays in cache while every token streams by.
    const int64_t nr = std::min<int64_t>(kKPanelRows, range.r1 - p0);
    for (int64_t r = 0; r < nr; ++r) {
      kt.unpack(wbase + (p0 + r) * static_cast<int64_t>(w.row_bytes), nb,
                panel + r * nb);
    }
    for (int64_t tt = 0; tt < n_tok; tt += kKNr) {
      const int nt_tile = static_cast<int>(std::min<int64_t>(kKNr, n_tok - tt));
      for (int64_t rr = 0; rr < nr; rr += kKMr) {
        const int nr_tile = static_cast<int>(std::min<int64_t>(kKMr, nr - rr));
        kt.tiles[(nr_tile - 1) * kKNr + (nt_tile - 1)](panel + rr * nb,
                                                       acts + tt * nb, nb, res);
        for (int r = 0; r < nr_tile; ++r) {
          for (int t = 0; t < nt_tile; ++t) {
            out[(range.t0 + tt + t) * w.rows + p0 + rr + r] =
                res[r * nt_tile + t];
          }
        }
      }
    }
  }
}

}  // namespace kvsession::kernels::matmul_internal
