// Attention throughput on the default model's shape (SmolLM2-135M: 9 query
// heads, 3 KV heads, head_dim 64, 16-token blocks): decode (one query at the
// end of a 1k or 4k context) and prefill chunks (90 queries at positions
// 900..989, as a follow-up turn; 512 queries from position 0).
// items_per_second counts flops: 4 * head_dim per (query, head, position),
// a multiply-add each for the score and for the V accumulation.
//
//   kvsession-attention-benchmark --benchmark_filter=...
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cpu/ops.h"
#include "kernels/f16.h"
#include "kernels/kv_cache_view.h"

namespace kvsession::kernels {
namespace {

constexpr int32_t kHeads = 9;
constexpr int32_t kKvHeads = 3;
constexpr int32_t kHeadDim = 64;
constexpr int32_t kBlockSize = 16;

// One sequence of `length` positions in a one-layer cache whose blocks are
// shuffled, as a long-lived arena's would be.
struct Cache {
  std::vector<uint16_t> arena;
  std::vector<int32_t> table;
  KvCacheView kv;

  explicit Cache(int32_t length) {
    const int32_t blocks = (length + kBlockSize - 1) / kBlockSize;
    kv.num_blocks = blocks;
    kv.block_size = kBlockSize;
    kv.n_layers = 1;
    kv.n_kv_heads = kKvHeads;
    kv.head_dim = kHeadDim;
    arena.resize(static_cast<size_t>(kv.num_blocks * kv.BlockElems()));
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (uint16_t& h : arena) h = FloatToHalf(dist(rng));
    kv.base = arena.data();
    table.resize(static_cast<size_t>(blocks));
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng);
  }
};

// Args: first position, queries (consecutive positions), threads.
void BM_Attention(benchmark::State& state) {
  const int32_t first = static_cast<int32_t>(state.range(0));
  const int32_t n_tokens = static_cast<int32_t>(state.range(1));
  const CpuExec exec{static_cast<int>(state.range(2))};
  const Cache cache(first + n_tokens);
  std::vector<int32_t> positions(static_cast<size_t>(n_tokens));
  std::iota(positions.begin(), positions.end(), first);
  const std::vector<const int32_t*> tables(static_cast<size_t>(n_tokens),
                                           cache.table.data());
  const TokenPlacement placement{n_tokens, positions.data(), tables.data()};
  const size_t width = static_cast<size_t>(kHeads) * kHeadDim;
  std::vector<float> q(width * static_cast<size_t>(n_tokens));
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& f : q) f = dist(rng);
  std::vector<float> out(q.size());
  const AttentionParams params{kHeads, 1.0f / std::sqrt(float{kHeadDim})};
  for (auto _ : state) {
    Attention(cache.kv, 0, placement, q.data(), params, out.data(), exec);
    benchmark::ClobberMemory();
  }
  int64_t attended = 0;  // (query, position) pairs
  for (int32_t p : positions) attended += int64_t{p} + 1;
  state.SetItemsProcessed(state.iterations() * attended * kHeads * 4 *
                          kHeadDim);
}

void AttentionArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"first", "tokens", "threads"});
  const int64_t shapes[][2] = {{1023, 1}, {4095, 1}, {900, 90}, {0, 512}};
  for (const auto& s : shapes) {
    for (int64_t threads : {1, 2}) b->Args({s[0], s[1], threads});
  }
}
BENCHMARK(BM_Attention)->Apply(AttentionArgs)->UseRealTime();

}  // namespace
}  // namespace kvsession::kernels

BENCHMARK_MAIN();
