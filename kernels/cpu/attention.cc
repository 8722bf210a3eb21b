// Causal attention over the paged f16 KV cache.
//
// Every (token, head) pair has its own fixed operation order: a score per
// position (8-lane dot, fixed reduction, times scale), max, exp, an 8-lane
// sum, probabilities = e * (1 / sum), then V accumulated by fma over
// positions lo..p in order (lo = 0, or the window's first position on a
// sliding-window layer). Nothing depends on the other tokens of the batch
// or on the thread that runs the pair, so a token's output is bitwise the
// same in any batch. Blocks wholly before lo are never touched: a store may
// have freed them.
//
// To read K and V less often, a work item is a tile: up to kTileQueries
// consecutive-position tokens of one sequence and all query heads of one GQA
// group. Each K/V block is converted to f32 once per tile and then used by
// every (token, head) row of the tile, two rows at a time. The rows still
// run the per-pair order above; tiling only changes which rows share a load.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"
#include "kernels/f16.h"

namespace kvsession::kernels {
namespace {

// e[j] = exp(s[j] - mx) for j < n; the scalar tail rounds like Exp8.
void ExpShifted(float* s, int64_t n, float mx) {
  int64_t j = 0;
#if KVS_CPU_AVX2
  const __m256 vmx = _mm256_set1_ps(mx);
  for (; j + simd::kLanes <= n; j += simd::kLanes) {
    _mm256_storeu_ps(s + j,
                     simd::Exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vmx)));
  }
#endif
  for (; j < n; ++j) s[j] = simd::ExpScalar(s[j] - mx);
}

// out[d] = fma(p[j], v[j][d], out[d]) for j = 0..m-1 in order: each element
// keeps its own fixed sequence; the 64-wide chunks only keep it in registers.
void AccumulateV(const float* p, const uint16_t* v, int64_t m, int64_t hd,
                 float* out) {
  int64_t d0 = 0;
#if KVS_CPU_AVX2
  constexpr int kRegs = 8;
  for (; d0 + kRegs * simd::kLanes <= hd; d0 += kRegs * simd::kLanes) {
    __m256 acc[kRegs];
    for (int i = 0; i < kRegs; ++i) {
      acc[i] = _mm256_loadu_ps(out + d0 + i * simd::kLanes);
    }
    for (int64_t j = 0; j < m; ++j) {
      const __m256 w = _mm256_set1_ps(p[j]);
      const uint16_t* vj = v + j * hd + d0;
      for (int i = 0; i < kRegs; ++i) {
        acc[i] =
            _mm256_fmadd_ps(w, simd::LoadF16x8(vj + i * simd::kLanes), acc[i]);
      }
    }
    for (int i = 0; i < kRegs; ++i) {
      _mm256_storeu_ps(out + d0 + i * simd::kLanes, acc[i]);
    }
  }
  for (; d0 + simd::kLanes <= hd; d0 += simd::kLanes) {
    __m256 acc = _mm256_loadu_ps(out + d0);
    for (int64_t j = 0; j < m; ++j) {
      acc = _mm256_fmadd_ps(_mm256_set1_ps(p[j]),
                            simd::LoadF16x8(v + j * hd + d0), acc);
    }
    _mm256_storeu_ps(out + d0, acc);
  }
#endif
  for (; d0 < hd; ++d0) {
    float acc = out[d0];
    for (int64_t j = 0; j < m; ++j) {
      acc = std::fma(p[j], HalfToFloat(v[j * hd + d0]), acc);
    }
    out[d0] = acc;
  }
}

inline float RoundToHalf(float x) { return HalfToFloat(FloatToHalf(x)); }

// Q and the softmax weights are rounded to f16 before they meet the f16 K
// and V, where ggml rounds them in llama.cpp's attention (its matmuls
// convert the f32 operand to the f16 one's type). Keeping those rounding
// points keeps our logits within noise of the reference implementation;
// the cost is one conversion per element.
void AttendOne(const KvCacheView& kv, int32_t layer, int32_t kv_head,
               int32_t lo, int32_t pos, const int32_t* table,
               const float* q_in, float scale, float* q, float* scores,
               float* out) {
  const int32_t hd = kv.head_dim;
  for (int32_t i = 0; i < hd; ++i) q[i] = RoundToHalf(q_in[i]);
  const int32_t bs = kv.block_size;
  const int64_t end = int64_t{pos} + 1;
  const int64_t n = end - lo;  // scores[j - lo] is position j's
  // Runs of positions [j0, j0 + m) within one block.
  auto for_runs = [&](auto&& f) {
    for (int64_t j0 = lo; j0 < end;) {
      const int32_t block = table[j0 / bs];
      KVS_CHECK(block >= 0 && block < kv.num_blocks) << "block " << block;
      const int64_t slot = j0 % bs;
      const int64_t m = std::min<int64_t>(bs - slot, end - j0);
      f(block, slot, j0 - lo, m);
      j0 += m;
    }
  };
  for_runs([&](int32_t block, int64_t slot, int64_t off, int64_t m) {
    const uint16_t* k = kv.base + kv.Offset(block, layer, 0, kv_head, 0) +
                        slot * hd;
    float* s = scores + off;
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) simd::DotF32F16x4(q, k + i * hd, hd, hd, s + i);
    for (; i < m; ++i) s[i] = simd::DotF32F16(q, k + i * hd, hd);
    for (i = 0; i < m; ++i) s[i] = s[i] * scale;
  });
  float mx = scores[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, scores[j]);
  ExpShifted(scores, n, mx);
  const float inv = 1.0f / simd::SumF32(scores, n);
  for (int64_t j = 0; j < n; ++j) scores[j] = RoundToHalf(scores[j] * inv);
  std::fill(out, out + hd, 0.0f);
  for_runs([&](int32_t block, int64_t slot, int64_t off, int64_t m) {
    const uint16_t* v = kv.base + kv.Offset(block, layer, 1, kv_head, 0) +
                        slot * hd;
    AccumulateV(scores + off, v, m, hd, out);
  });
}

#if KVS_CPU_AVX2

// Tokens per tile. Larger tiles share each K/V block among more rows; 8
// tokens times a 3-head group keeps a tile's scores (24 rows) in L2.
constexpr int32_t kTileQueries = 8;

// Lane i of the result is Hsum8(a[i]) bit for bit: the same tree,
// (l0+l4 + l2+l6) + (l1+l5 + l3+l7), done for eight vectors at once.
inline __m256 Hsum8x8(const __m256* a) {
  __m256 s[4];  // s[i] = [a_i: l0+l4 .. l3+l7 | a_{i+4}: l0+l4 .. l3+l7]
  for (int i = 0; i < 4; ++i) {
    s[i] = _mm256_add_ps(_mm256_permute2f128_ps(a[i], a[i + 4], 0x31),
                         _mm256_permute2f128_ps(a[i], a[i + 4], 0x20));
  }
  const auto pairs = [](__m256 x, __m256 y) {
    return _mm256_add_ps(_mm256_shuffle_ps(x, y, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(x, y, _MM_SHUFFLE(3, 2, 3, 2)));
  };
  const __m256 t01 = pairs(s[0], s[1]);  // [a0 a0 a1 a1 | a4 a4 a5 a5]
  const __m256 t23 = pairs(s[2], s[3]);  // [a2 a2 a3 a3 | a6 a6 a7 a7]
  return _mm256_add_ps(_mm256_shuffle_ps(t01, t23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm256_shuffle_ps(t01, t23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Rows of a tile are handled in groups of up to kGroupRows: three rows
// give 12 independent fma chains, enough to hide fma latency, and still fit
// the 16 vector registers with the loaded K or V values.
constexpr int kGroupRows = 3;

// K positions per score block for a group of kRows rows.
template <int kRows>
inline constexpr int kScoreCols = kRows == 1 ? 8 : 4;

// s[r][c] = DotF32F16(q[r], K row c) * scale for kRows rows and
// kScoreCols<kRows> K rows (f32, stride hd; hd % 8 == 0): independent
// accumulators, each in DotF32F16's lane order.
template <int kRows>
inline void ScoreBlock(const float* const* q, const float* k, int64_t hd,
                       float scale, float* const* s) {
  constexpr int kCols = kScoreCols<kRows>;
  constexpr int kAcc = kRows * kCols;
  __m256 acc[(kAcc + 7) / 8 * 8];
  for (__m256& a : acc) a = _mm256_setzero_ps();
  for (int64_t i = 0; i < hd; i += simd::kLanes) {
    for (int r = 0; r < kRows; ++r) {
      const __m256 qv = _mm256_loadu_ps(q[r] + i);
      for (int c = 0; c < kCols; ++c) {
        acc[r * kCols + c] = _mm256_fmadd_ps(
            qv, _mm256_loadu_ps(k + c * hd + i), acc[r * kCols + c]);
      }
    }
  }
  const __m256 vscale = _mm256_set1_ps(scale);
  for (int g = 0; g < kAcc; g += 8) {
    const __m256 sum = _mm256_mul_ps(Hsum8x8(acc + g), vscale);
    if constexpr (kCols == 8) {
      _mm256_storeu_ps(s[g / 8], sum);
    } else {
      _mm_storeu_ps(s[g / 4], _mm256_castps256_ps128(sum));
      if (g / 4 + 1 < kRows) {
        _mm_storeu_ps(s[g / 4 + 1], _mm256_extractf128_ps(sum, 1));
      }
    }
  }
}

// out[r][d0 + d] = fma(p[r][j], v[j][d0 + d], out[r][d0 + d]) for j < m in
// order, d < 8 * kRegs, for kRows rows at once (V rows f32, stride hd).
template <int kRows, int kRegs>
inline void AccumulateVRows(const float* const* p, const float* v, int64_t m,
                            int64_t hd, int64_t d0, float* const* out) {
  __m256 acc[kRows][kRegs];
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kRegs; ++c) {
      acc[r][c] = _mm256_loadu_ps(out[r] + d0 + c * simd::kLanes);
    }
  }
  for (int64_t j = 0; j < m; ++j) {
    const float* vj = v + j * hd + d0;
    for (int r = 0; r < kRows; ++r) {
      const __m256 w = _mm256_broadcast_ss(p[r] + j);
      for (int c = 0; c < kRegs; ++c) {
        acc[r][c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(vj + c * simd::kLanes),
                                    acc[r][c]);
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kRegs; ++c) {
      _mm256_storeu_ps(out[r] + d0 + c * simd::kLanes, acc[r][c]);
    }
  }
}

// AccumulateVRows over the whole head, widest register blocks first.
template <int kRows>
void AccumulateVHead(const float* const* p, const float* v, int64_t m,
                     int64_t hd, float* const* out) {
  constexpr int kWide = kRows == 1 ? 8 : 4;
  int64_t d0 = 0;
  for (; d0 + kWide * simd::kLanes <= hd; d0 += kWide * simd::kLanes) {
    AccumulateVRows<kRows, kWide>(p, v, m, hd, d0, out);
  }
  for (; d0 < hd; d0 += simd::kLanes) {
    AccumulateVRows<kRows, 1>(p, v, m, hd, d0, out);
  }
}

// Scores of `rows` (<= kGroupRows) consecutive rows of a tile against K rows
// [0, m) of a chunk; s[r] points at the chunk's first position.
void ScoreGroup(const float* const* q, int rows, const float* k, int64_t m,
                int64_t hd, float scale, float* const* s) {
  auto run = [&]<int kRows>() {
    constexpr int kCols = kScoreCols<kRows>;
    for (int64_t i = 0; i < m; i += kCols) {
      float* si[kRows];
      for (int r = 0; r < kRows; ++r) si[r] = s[r] + i;
      ScoreBlock<kRows>(q, k + i * hd, hd, scale, si);
    }
  };
  switch (rows) {
    case 3:
      run.template operator()<3>();
      break;
    case 2:
      run.template operator()<2>();
      break;
    default:
      run.template operator()<1>();
      break;
  }
}

// V rows [b[r], e[r]) of a chunk into out[r] for `rows` (<= kGroupRows)
// rows whose b and e never decrease with r (later rows are the same token
// or a later one): the rows active at a position are then consecutive, so
// the chunk goes in segments between the b's and e's, each run for its
// active rows at once. Every row still adds its positions in order.
void AccumulateVGroup(const float* const* p, int rows, const int64_t* b,
                      const int64_t* e, const float* v, int64_t hd,
                      float* const* out) {
  int64_t cuts[2 * kGroupRows];
  std::copy(b, b + rows, cuts);
  std::copy(e, e + rows, cuts + rows);
  std::sort(cuts, cuts + 2 * rows);
  for (int c = 0; c + 1 < 2 * rows; ++c) {
    const int64_t j = cuts[c];
    const int64_t count = cuts[c + 1] - j;
    if (count <= 0) continue;
    int first = 0;
    while (first < rows && e[first] <= j) ++first;
    int last = rows - 1;
    while (last >= first && b[last] > j) --last;
    if (first > last) continue;
    const float* pj[kGroupRows];
    for (int r = first; r <= last; ++r) pj[r - first] = p[r] + j;
    const float* vj = v + j * hd;
    switch (last - first + 1) {
      case 3:
        AccumulateVHead<3>(pj, vj, count, hd, out + first);
        break;
      case 2:
        AccumulateVHead<2>(pj, vj, count, hd, out + first);
        break;
      default:
        AccumulateVHead<1>(pj, vj, count, hd, out + first);
        break;
    }
  }
}

// Positions [j0, j0 + m) of one KV head's K (kv = 0) or V (kv = 1) rows,
// j0 a multiple of the block size, to f32 rows (stride hd); then zero rows
// up to the next multiple of 8, so score blocks may run past m (those
// scores are never read).
void LoadRows(const KvCacheView& kv, const int32_t* table, int32_t layer,
              int32_t kv_type, int32_t kv_head, int64_t j0, int64_t m,
              float* dst) {
  const int64_t hd = kv.head_dim;
  const int32_t bs = kv.block_size;
  for (int64_t jb = 0; jb < m; jb += bs) {
    const int32_t block = table[(j0 + jb) / bs];
    KVS_CHECK(block >= 0 && block < kv.num_blocks) << "block " << block;
    const uint16_t* src =
        kv.base + kv.Offset(block, layer, kv_type, kv_head, 0);
    const int64_t count = std::min<int64_t>(bs, m - jb) * hd;
    float* out = dst + jb * hd;
    for (int64_t i = 0; i < count; i += simd::kLanes) {
      _mm256_storeu_ps(out + i, simd::LoadF16x8(src + i));
    }
  }
  const int64_t padded = (m + simd::kLanes - 1) / simd::kLanes * simd::kLanes;
  std::fill(dst + m * hd, dst + padded * hd, 0.0f);
}

// Asks for the f16 rows of positions [j0, min(j0 + m, n)) ahead of
// LoadRows: one tile's pass over a head's K or V outlasts L2 residency
// often enough that waiting on misses showed up in profiles.
void PrefetchRows(const KvCacheView& kv, const int32_t* table, int32_t layer,
                  int32_t kv_type, int32_t kv_head, int64_t j0, int64_t m,
                  int64_t n) {
  const int64_t hd = kv.head_dim;
  const int32_t bs = kv.block_size;
  const int64_t end = std::min(j0 + m, n);
  for (int64_t jb = j0; jb < end; jb += bs) {
    const char* src = reinterpret_cast<const char*>(
        kv.base + kv.Offset(table[jb / bs], layer, kv_type, kv_head, 0));
    const int64_t bytes =
        std::min<int64_t>(bs, end - jb) * hd * int64_t{sizeof(uint16_t)};
    for (int64_t i = 0; i < bytes; i += 64) {
      _mm_prefetch(src + i, _MM_HINT_T0);
    }
  }
}

// dst[j] = RoundToHalf(src[j] * inv) (RoundToHalf(src[j]) if !kScale), bit
// for bit: F16C rounds to nearest even like FloatToHalf and converts back
// exactly.
template <bool kScale>
void RoundToHalfRow(const float* src, float* dst, int64_t n, float inv) {
  int64_t j = 0;
  const __m256 vinv = _mm256_set1_ps(inv);
  for (; j + simd::kLanes <= n; j += simd::kLanes) {
    __m256 x = _mm256_loadu_ps(src + j);
    if constexpr (kScale) x = _mm256_mul_ps(x, vinv);
    _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm256_cvtps_ph(
                                  x, _MM_FROUND_TO_NEAREST_INT)));
  }
  for (; j < n; ++j) dst[j] = RoundToHalf(kScale ? src[j] * inv : src[j]);
}

// The scalar loop `mx = s[0]; mx = std::max(mx, s[j])` in 8 lanes: each lane
// applies the same update, s[j] > mx ? s[j] : mx, to its own elements, so a
// NaN in s[0] wins and any later NaN is skipped, as in the loop. Only the
// sign of a zero maximum may differ, and s - mx and exp do not see it.
float MaxScores(const float* s, int64_t n) {
  __m256 vmx = _mm256_set1_ps(s[0]);
  int64_t j = 0;
  for (; j + simd::kLanes <= n; j += simd::kLanes) {
    vmx = _mm256_max_ps(_mm256_loadu_ps(s + j), vmx);
  }
  alignas(32) float lanes[simd::kLanes];
  _mm256_store_ps(lanes, vmx);
  float mx = lanes[0];
  for (int i = 1; i < simd::kLanes; ++i) mx = std::max(mx, lanes[i]);
  for (; j < n; ++j) mx = std::max(mx, s[j]);
  return mx;
}

// Queries [first, first + count) of the batch: one sequence, positions
// consecutive and increasing.
struct Tile {
  int32_t first;
  int32_t count;
};

// Per-thread buffers of AttendTile.
struct TileScratch {
  std::vector<float> q;       // [rows][hd], f16-rounded queries
  std::vector<float> scores;  // [rows][stride]
  std::vector<float> kv;      // one chunk of K or V rows in f32
};

// All (token, head) rows of one tile and one KV head. Row r is token
// tile.first + r / group, head kv_head * group + r % group. K and V are read
// in chunks of whole blocks, about kChunkPositions positions (f32: 16 KiB
// at head_dim 64), which stay in L1 while every row uses them. The chunks
// start at the block of the tile's first window position (`base`); row r
// attends to [lo(r), end(r)), and its score of position j is at
// s_row(r)[j - base].
void AttendTile(const KvCacheView& kv, int32_t layer,
                const TokenPlacement& placement, const float* q_in,
                const AttentionParams& params, const Tile& tile,
                int32_t kv_head, TileScratch& scratch, float* out_all) {
  constexpr int64_t kChunkPositions = 64;
  const int32_t n_heads = params.n_heads;
  const float scale = params.scale;
  const int64_t hd = kv.head_dim;
  const int32_t bs = kv.block_size;
  const int64_t chunk = bs * std::max<int64_t>(1, kChunkPositions / bs);
  const int32_t group = n_heads / kv.n_kv_heads;
  const int32_t rows = tile.count * group;
  const int32_t* table = placement.block_tables[tile.first];
  const int32_t first_pos = placement.positions[tile.first];
  const int64_t n_max = int64_t{first_pos} + tile.count;  // longest row
  const int64_t base = WindowStart(first_pos, params.window) / bs * bs;
  // Score blocks of 8 columns may write up to 7 past a row's end.
  const int64_t stride = (n_max - base + simd::kLanes - 1) / simd::kLanes *
                             simd::kLanes +
                         simd::kLanes;
  scratch.q.resize(static_cast<size_t>(rows * hd));
  scratch.scores.resize(static_cast<size_t>(rows * stride));
  scratch.kv.resize(static_cast<size_t>((chunk + simd::kLanes) * hd));
  float* const kvf = scratch.kv.data();

  auto n_of = [&](int32_t r) { return int64_t{first_pos} + r / group + 1; };
  auto lo_of = [&](int32_t r) -> int64_t {
    return WindowStart(first_pos + r / group, params.window);
  };
  auto q_row = [&](int32_t r) { return scratch.q.data() + r * hd; };
  auto s_row = [&](int32_t r) { return scratch.scores.data() + r * stride; };
  auto out_row = [&](int32_t r) {
    const int64_t t = tile.first + r / group;
    const int64_t h = int64_t{kv_head} * group + r % group;
    return out_all + (t * n_heads + h) * hd;
  };

  for (int32_t r = 0; r < rows; ++r) {
    RoundToHalfRow<false>(q_in + (out_row(r) - out_all), q_row(r), hd, 0.0f);
  }

  // Scores: K chunk by chunk, every row of the tile against it (a row's
  // scores before its window are computed but never read).
  for (int64_t j0 = base; j0 < n_max; j0 += chunk) {
    const int64_t m = std::min<int64_t>(chunk, n_max - j0);
    LoadRows(kv, table, layer, 0, kv_head, j0, m, kvf);
    if (j0 + chunk < n_max) {
      PrefetchRows(kv, table, layer, 0, kv_head, j0 + chunk, chunk, n_max);
    } else {
      PrefetchRows(kv, table, layer, 1, kv_head, base, chunk, n_max);
    }
    for (int32_t r = 0; r < rows; r += kGroupRows) {
      const int n = std::min(kGroupRows, rows - r);
      // The group's last row is its longest.
      const int64_t mr = std::min<int64_t>(m, n_of(r + n - 1) - j0);
      const float* qg[kGroupRows];
      float* sg[kGroupRows];
      for (int i = 0; i < n; ++i) {
        qg[i] = q_row(r + i);
        sg[i] = s_row(r + i) + (j0 - base);
      }
      ScoreGroup(qg, n, kvf, mr, hd, scale, sg);
    }
  }

  for (int32_t r = 0; r < rows; ++r) {
    float* s = s_row(r) + (lo_of(r) - base);
    const int64_t n = n_of(r) - lo_of(r);
    ExpShifted(s, n, MaxScores(s, n));
    RoundToHalfRow<true>(s, s, n, 1.0f / simd::SumF32(s, n));
    float* o = out_row(r);
    std::fill(o, o + hd, 0.0f);
  }

  // Outputs: V chunk by chunk; each row adds its own window's positions.
  for (int64_t j0 = base; j0 < n_max; j0 += chunk) {
    const int64_t m = std::min<int64_t>(chunk, n_max - j0);
    LoadRows(kv, table, layer, 1, kv_head, j0, m, kvf);
    PrefetchRows(kv, table, layer, 1, kv_head, j0 + chunk, chunk, n_max);
    for (int32_t r = 0; r < rows; r += kGroupRows) {
      const int n = std::min(kGroupRows, rows - r);
      // Later rows are the same token or a later one: never shorter.
      const float* pg[kGroupRows];
      float* og[kGroupRows];
      int64_t bg[kGroupRows];
      int64_t eg[kGroupRows];
      for (int i = 0; i < n; ++i) {
        pg[i] = s_row(r + i) + (j0 - base);
        og[i] = out_row(r + i);
        bg[i] = std::clamp<int64_t>(lo_of(r + i) - j0, 0, m);
        eg[i] = std::clamp<int64_t>(n_of(r + i) - j0, 0, m);
      }
      AccumulateVGroup(pg, n, bg, eg, kvf, hd, og);
    }
  }
}

// Splits the batch into tiles: runs of adjacent tokens with the same block
// table and positions p, p + 1, ..., at most kTileQueries long.
std::vector<Tile> MakeTiles(const TokenPlacement& placement) {
  std::vector<Tile> tiles;
  for (int32_t t = 0; t < placement.n_tokens; ++t) {
    KVS_CHECK(placement.positions[t] >= 0)
        << "position " << placement.positions[t];
    if (!tiles.empty()) {
      Tile& last = tiles.back();
      const int32_t prev = last.first + last.count - 1;
      if (last.count < kTileQueries &&
          placement.block_tables[t] == placement.block_tables[prev] &&
          placement.positions[t] == placement.positions[prev] + 1) {
        ++last.count;
        continue;
      }
    }
    tiles.push_back({t, 1});
  }
  return tiles;
}

#endif  // KVS_CPU_AVX2

}  // namespace

void Attention(const KvCacheView& kv, int32_t layer,
               const TokenPlacement& placement, const float* q,
               const AttentionParams& params, float* out, const CpuExec& exec) {
  const int32_t n_heads = params.n_heads;
  KVS_CHECK(layer >= 0 && layer < kv.n_layers) << "layer " << layer;
  KVS_CHECK(n_heads > 0 && kv.n_kv_heads > 0 && n_heads % kv.n_kv_heads == 0)
      << "n_heads " << n_heads << " n_kv_heads " << kv.n_kv_heads;
  KVS_CHECK(params.window >= 0) << "window " << params.window;
  const int32_t group = n_heads / kv.n_kv_heads;
  const int32_t hd = kv.head_dim;
#if KVS_CPU_AVX2
  if (hd % simd::kLanes == 0) {
    const std::vector<Tile> tiles = MakeTiles(placement);
    const int64_t n_kv = kv.n_kv_heads;
    const int64_t n_tiles = static_cast<int64_t>(tiles.size());
    const int64_t n_items = n_tiles * n_kv;
    // KV-head-major, so that a thread's consecutive items reread one head's
    // K and V (L2-sized) rather than the whole layer's; within a head the
    // longest tiles first, so the dynamic schedule does not end on one.
    std::vector<int32_t> order(tiles.size());
    std::iota(order.begin(), order.end(), 0);
    auto cost = [&](int32_t i) {
      const Tile& tile = tiles[static_cast<size_t>(i)];
      const int32_t p = placement.positions[tile.first];
      return int64_t{tile.count} *
             (int64_t{p} + tile.count - WindowStart(p, params.window));
    };
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return cost(a) > cost(b); });
#pragma omp parallel num_threads(exec.n_threads) if (n_items > 1)
    {
      TileScratch scratch;
#pragma omp for schedule(dynamic, 1)
      for (int64_t item = 0; item < n_items; ++item) {
        const Tile& tile = tiles[static_cast<size_t>(order[item % n_tiles])];
        AttendTile(kv, layer, placement, q, params, tile,
                   static_cast<int32_t>(item / n_tiles), scratch, out);
      }
    }
    return;
  }
#endif
  // Head sizes the tiled kernel does not cover: one (token, head) at a time.
  const int64_t n_items = int64_t{placement.n_tokens} * n_heads;
#pragma omp parallel num_threads(exec.n_threads) if (n_items > 1)
  {
    std::vector<float> scores;
    std::vector<float> q_half(static_cast<size_t>(hd));
    // Work per pair grows with its position: dynamic keeps threads busy.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < n_items; ++item) {
      const int64_t t = item / n_heads;
      const int32_t h = static_cast<int32_t>(item % n_heads);
      const int32_t pos = placement.positions[t];
      KVS_CHECK(pos >= 0) << "position " << pos;
      if (scores.size() < static_cast<size_t>(pos) + 1) {
        scores.resize(static_cast<size_t>(pos) + 1);
      }
      const int64_t off = (t * n_heads + h) * hd;
      AttendOne(kv, layer, h / group, WindowStart(pos, params.window), pos,
                placement.block_tables[t], q + off, params.scale,
                q_half.data(), scores.data(), out + off);
    }
  }
}

}  // namespace kvsession::kernels
