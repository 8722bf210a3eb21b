#include "tests/runtime/model_test_util.h"

#include <cstring>
#include <random>

#include "gtest/gtest.h"

namespace kvsession::testing {

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = dist(rng);
  return t;
}

std::unique_ptr<runtime::SequenceRunner> MakeRunner(runtime::Model* model,
                                                    int32_t max_tokens,
                                                    uint64_t shuffle,
                                                    int32_t chunk) {
  runtime::SequenceRunner::Options o;
  o.max_tokens = max_tokens;
  o.shuffle_seed = shuffle;
  o.max_chunk = chunk;
  absl::StatusOr<std::unique_ptr<runtime::SequenceRunner>> r =
      runtime::SequenceRunner::Create(model, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : nullptr;
}

std::vector<uint16_t> TokenKv(const runtime::SequenceRunner& r, int32_t pos) {
  const kernels::KvCacheView& kv = r.kv();
  std::vector<uint16_t> out;
  const int32_t block = r.block_table()[pos / kv.block_size];
  std::vector<uint16_t> row(kv.head_dim);
  for (int32_t l = 0; l < kv.n_layers; ++l) {
    for (int32_t which = 0; which < 2; ++which) {
      for (int32_t h = 0; h < kv.n_kv_heads; ++h) {
        r.model()->backend()->CopyToHost(
            kv.base + kv.Offset(block, l, which, h, pos % kv.block_size),
            row.data(), row.size() * sizeof(uint16_t));
        out.insert(out.end(), row.begin(), row.end());
      }
    }
  }
  return out;
}

bool BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace kvsession::testing
