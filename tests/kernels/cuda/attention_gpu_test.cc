// LaunchAttention against the CPU Attention (parity within a tolerance), an
// exact double-precision reference (a tight bound that catches a missing or
// extra position even at long contexts), and itself: a token's output must
// be bitwise the same alone in a decode step and inside any prefill or
// mixed batch, whatever n_tokens and max_position.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/ops.h"
#include "kernels/f16.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace kvsession::kernels::cuda {
namespace {

using ::kvsession::testing::DeviceBuffer;
using ::kvsession::testing::ToDevice;
using ::kvsession::testing::ToHost;

constexpr int32_t kLayers = 2;
constexpr int32_t kLayer = 1;  // not the first, so layer offsets matter
constexpr int kCpuThreads = 8;

// One query token: (sequence, position).
struct Query {
  int32_t seq;
  int32_t pos;
};

// A pool of KV blocks holding random f16 in [-1, 1] (host and device) and
// sequences whose block tables are shuffled picks from the pool, distinct
// within a sequence. Sequences may share blocks: attention only reads.
class Fixture {
 public:
  Fixture(int32_t n_kv_heads, int32_t head_dim, int32_t block_size,
          int32_t partition, const std::vector<int32_t>& seq_lengths,
          uint32_t seed)
      : partition_(partition), lengths_(seq_lengths) {
    std::mt19937 rng(seed);
    int32_t most_blocks = 1;
    for (const int32_t len : lengths_) {
      most_blocks = std::max(most_blocks, (len + block_size - 1) / block_size);
    }
    kv_.num_blocks = most_blocks + 7;
    kv_.block_size = block_size;
    kv_.n_layers = kLayers;
    kv_.n_kv_heads = n_kv_heads;
    kv_.head_dim = head_dim;
    arena_.resize(static_cast<size_t>(kv_.num_blocks * kv_.BlockElems()));
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (uint16_t& h : arena_) h = FloatToHalf(u(rng));
    kv_.base = arena_.data();
    std::vector<int32_t> ids(static_cast<size_t>(kv_.num_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    for (const int32_t len : lengths_) {
      std::shuffle(ids.begin(), ids.end(), rng);
      offsets_.push_back(static_cast<int64_t>(tables_.size()));
      tables_.insert(tables_.end(), ids.begin(),
                     ids.begin() + (len + block_size - 1) / block_size);
    }
    d_arena_ = ToDevice(arena_);
    d_tables_ = ToDevice(tables_);
    kv_dev_ = kv_;
    kv_dev_.base = d_arena_.as<uint16_t>();
  }

  const KvCacheView& kv() const { return kv_; }
  int32_t head_dim() const { return kv_.head_dim; }
  float scale() const { return 1.0f / std::sqrt(float(kv_.head_dim)); }

  // LaunchAttention; max_position < 0 means the batch's largest position.
  std::vector<float> Gpu(const std::vector<Query>& qs, const float* q,
                         int32_t n_heads, int32_t max_position = -1) const {
    const int32_t n = static_cast<int32_t>(qs.size());
    std::vector<int32_t> positions;
    std::vector<const int32_t*> tables;
    int32_t max_pos = 0;
    for (const Query& x : qs) {
      EXPECT_LT(x.pos, lengths_[x.seq]);
      positions.push_back(x.pos);
      tables.push_back(d_tables_.as<int32_t>() + offsets_[x.seq]);
      max_pos = std::max(max_pos, x.pos);
    }
    if (max_position < 0) max_position = max_pos;
    const size_t width = size_t(n_heads) * kv_.head_dim;
    DeviceBuffer d_pos = ToDevice(positions);
    DeviceBuffer d_tab = ToDevice(tables);
    DeviceBuffer d_q = ToDevice(std::vector<float>(q, q + n * width));
    const int64_t ws_floats =
        AttentionWorkspaceFloats(n, n_heads, kv_.head_dim, partition_,
                                 max_position);
    DeviceBuffer d_ws(static_cast<size_t>(ws_floats) * sizeof(float));
    DeviceBuffer d_out(n * width * sizeof(float));
    // NaN everywhere first: unwritten output or partials show up.
    EXPECT_EQ(cudaMemset(d_ws.get(), 0xff, d_ws.bytes()), cudaSuccess);
    EXPECT_EQ(cudaMemset(d_out.get(), 0xff, d_out.bytes()), cudaSuccess);
    LaunchAttention(kv_dev_, kLayer,
                    {n, d_pos.as<int32_t>(), d_tab.as<const int32_t* const>()},
                    d_q.as<float>(), {n_heads, scale()}, partition_,
                    max_position, d_ws.as<float>(), d_out.as<float>(), nullptr);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    return ToHost<float>(d_out, n * width);
  }

  // The CPU op.
  std::vector<float> Cpu(const std::vector<Query>& qs, const float* q,
                         int32_t n_heads) const {
    std::vector<int32_t> positions;
    std::vector<const int32_t*> tables;
    for (const Query& x : qs) {
      positions.push_back(x.pos);
      tables.push_back(tables_.data() + offsets_[x.seq]);
    }
    std::vector<float> out(qs.size() * n_heads * kv_.head_dim, NAN);
    Attention(
        kv_, kLayer,
        {static_cast<int32_t>(qs.size()), positions.data(), tables.data()}, q,
        {n_heads, scale()}, out.data(), CpuExec{kCpuThreads});
    return out;
  }

  // Exact softmax attention in double over f16-rounded queries (the
  // contract's one rounding point shared by both backends).
  std::vector<double> Exact(const std::vector<Query>& qs, const float* q,
                            int32_t n_heads) const {
    const int32_t hd = kv_.head_dim;
    const int32_t group = n_heads / kv_.n_kv_heads;
    std::vector<double> out(qs.size() * n_heads * hd, 0.0);
    std::vector<double> qh(hd);
    for (size_t t = 0; t < qs.size(); ++t) {
      const int32_t* table = tables_.data() + offsets_[qs[t].seq];
      const int32_t n = qs[t].pos + 1;
      std::vector<double> s(n);
      for (int32_t h = 0; h < n_heads; ++h) {
        const size_t off = (t * n_heads + h) * hd;
        for (int32_t d = 0; d < hd; ++d) {
          qh[d] = HalfToFloat(FloatToHalf(q[off + d]));
        }
        auto row = [&](int32_t j, int32_t which) {
          return arena_.data() + kv_.Offset(table[j / kv_.block_size], kLayer,
                                            which, h / group,
                                            j % kv_.block_size);
        };
        double mx = -INFINITY;
        for (int32_t j = 0; j < n; ++j) {
          const uint16_t* k = row(j, 0);
          double dot = 0;
          for (int32_t d = 0; d < hd; ++d) dot += qh[d] * HalfToFloat(k[d]);
          s[j] = dot * scale();
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (double& x : s) sum += (x = std::exp(x - mx));
        for (int32_t j = 0; j < n; ++j) {
          const uint16_t* v = row(j, 1);
          for (int32_t d = 0; d < hd; ++d) {
            out[off + d] += s[j] / sum * HalfToFloat(v[d]);
          }
        }
      }
    }
    return out;
  }

 private:
  int32_t partition_;
  std::vector<int32_t> lengths_;
  KvCacheView kv_;
  KvCacheView kv_dev_;
  std::vector<uint16_t> arena_;
  std::vector<int32_t> tables_;
  std::vector<int64_t> offsets_;
  DeviceBuffer d_arena_;
  DeviceBuffer d_tables_;
};

// Worst |got - want| / (atol + rtol |want|) over all elements must be <= 1;
// the message names the worst element's token, head and column.
template <typename T>
void ExpectClose(const std::vector<float>& got, const std::vector<T>& want,
                 const std::vector<Query>& qs, int32_t n_heads,
                 int32_t head_dim, double atol, double rtol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0.0;
  size_t worst_i = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double w = static_cast<double>(want[i]);
    double r = std::fabs(got[i] - w) / (atol + rtol * std::fabs(w));
    if (!(r <= 1e30)) r = 1e30;  // NaN or inf
    if (r > worst) {
      worst = r;
      worst_i = i;
    }
  }
  const size_t width = size_t(n_heads) * head_dim;
  const size_t t = worst_i / width;
  EXPECT_LE(worst, 1.0) << what << ": worst element token " << t
                        << " (sequence " << qs[t].seq << ", position "
                        << qs[t].pos << ") head "
                        << (worst_i % width) / head_dim << " d "
                        << worst_i % head_dim << ": got " << got[worst_i]
                        << " want " << static_cast<double>(want[worst_i])
                        << " (ratio to tolerance " << worst << ")";
}

// Tolerances.
// Against the CPU op: K/V (f16) and the f16-rounded queries are exact, equal
// inputs on both sides; the CPU additionally rounds the normalized softmax
// weights to f16 (relative error <= 2^-11 each, so <= 4.9e-4 on an output
// that is a weighted mean of |v| <= 1), and the rest is f32 summation order
// and exp (~1e-6). 2e-3 + 2e-3 * |want| leaves margin above that while a
// wrong block, head or table moves outputs by ~1e-1.
constexpr double kCpuAtol = 2e-3;
constexpr double kCpuRtol = 2e-3;
// Against the exact reference: only f32 rounding of scores, 2-ulp expf and
// f32 sums of <= 256 terms per partition and <= 32 partitions, each term
// bounded by the total; a host emulation of the kernel's arithmetic stays
// within ~1e-7 of the exact result on these inputs. 1e-5 + 1e-5 * |want|
// keeps a 50x margin and still catches one position too many or too few at
// 8192 positions (an output moves by |v_j - out| / 8192, up to ~1e-4 on the
// worst of the 1024+ columns).
constexpr double kExactAtol = 1e-5;
constexpr double kExactRtol = 1e-5;

std::vector<float> RandomQ(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  // |q| up to 3 makes the softmax peaked enough that max and exp matter.
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<float> q(n);
  for (float& x : q) x = u(rng);
  return q;
}

// (head_dim, n_heads, block_size, partition); n_kv_heads = 2 unless noted.
using Shape = std::tuple<int, int, int, int>;

std::string ShapeName(const ::testing::TestParamInfo<Shape>& info) {
  return absl::StrCat("hd", std::get<0>(info.param), "_heads",
                      std::get<1>(info.param), "_bs", std::get<2>(info.param),
                      "_part", std::get<3>(info.param));
}

class AttentionGpuTest : public ::testing::TestWithParam<Shape> {};

// Context lengths (positions + 1) of the decode-style batch: both sides of
// block and partition boundaries (64 and 256), and long contexts.
const std::vector<int32_t> kContexts = {1,   15,  17,   63,   64,  65,
                                        255, 256, 257, 1000, 4099, 8192};

TEST_P(AttentionGpuTest, MatchesCpu) {
  KVS_REQUIRE_GPU();
  const auto [head_dim, n_heads, block_size, partition] = GetParam();
  constexpr int32_t kKvHeads = 2;
  const std::string shape = absl::StrCat(
      "head_dim ", head_dim, " n_heads ", n_heads, " n_kv_heads ", kKvHeads,
      " block_size ", block_size, " partition ", partition);
  SCOPED_TRACE(shape);
  // Sequences: one per context of kContexts, then 64 decode sequences of
  // random length, one with a prefill chunk crossing position 256, one
  // crossing 512.
  std::mt19937 rng(
      static_cast<uint32_t>(head_dim * 100 + n_heads * 10 + block_size));
  std::vector<int32_t> lengths = kContexts;
  const int32_t first_random = static_cast<int32_t>(lengths.size());
  std::uniform_int_distribution<int32_t> len(1, 1500);
  for (int i = 0; i < 64; ++i) lengths.push_back(len(rng));
  const int32_t prefill_seq = static_cast<int32_t>(lengths.size());
  lengths.push_back(280);
  const int32_t mixed_seq = static_cast<int32_t>(lengths.size());
  lengths.push_back(514);
  const Fixture f(kKvHeads, head_dim, block_size, partition, lengths,
                  static_cast<uint32_t>(rng()));
  const size_t width = size_t(n_heads) * head_dim;

  struct Case {
    std::string name;
    std::vector<Query> qs;
    bool exact;  // also against the double reference
  };
  std::vector<Case> cases;
  {
    Case c{"decode batch of the listed contexts", {}, true};
    for (int32_t i = 0; i < first_random; ++i) {
      c.qs.push_back({i, kContexts[i] - 1});
    }
    cases.push_back(c);
  }
  {
    Case c{"decode batch of 64 random contexts", {}, false};
    for (int32_t i = 0; i < 64; ++i) {
      c.qs.push_back({first_random + i, lengths[first_random + i] - 1});
    }
    cases.push_back(c);
  }
  {
    Case c{"prefill chunk at positions 200..279", {}, false};
    for (int32_t p = 200; p < 280; ++p) c.qs.push_back({prefill_seq, p});
    cases.push_back(c);
  }
  {
    Case c{"mixed batch of 7", {}, true};
    c.qs = {{5, 255}, {mixed_seq, 510}, {0, 0},          {mixed_seq, 511},
            {2, 16},  {mixed_seq, 512}, {mixed_seq, 513}};
    cases.push_back(c);
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::vector<float> q =
        RandomQ(c.qs.size() * width, static_cast<uint32_t>(rng()));
    const std::vector<float> got = f.Gpu(c.qs, q.data(), n_heads);
    ExpectClose(got, f.Cpu(c.qs, q.data(), n_heads), c.qs, n_heads, head_dim,
                kCpuAtol, kCpuRtol, shape + ", " + c.name + " vs CPU");
    if (c.exact) {
      ExpectClose(got, f.Exact(c.qs, q.data(), n_heads), c.qs, n_heads,
                  head_dim, kExactAtol, kExactRtol,
                  shape + ", " + c.name + " vs exact");
    }
    // Each token alone (decode at batch 1) gives the same bits.
    for (size_t t = 0; t < c.qs.size(); t += 3) {
      const std::vector<float> alone =
          f.Gpu({c.qs[t]}, q.data() + t * width, n_heads);
      EXPECT_EQ(0, std::memcmp(alone.data(), got.data() + t * width,
                               width * sizeof(float)))
          << shape << ", " << c.name << ": token " << t << " (position "
          << c.qs[t].pos << ") alone differs from the batch";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Grid, AttentionGpuTest,
    // n_heads 2, 6, 8, 16 over 2 KV heads: GQA ratios 1, 3, 4, 8.
    ::testing::Combine(::testing::Values(64, 128),
                       ::testing::Values(2, 6, 8, 16),
                       ::testing::Values(16, 32), ::testing::Values(64, 256)),
    ShapeName);

// Shapes outside the main grid: head_dim 256, a GQA group larger than one
// CTA's head slice (12 query heads on one KV head), 8 KV heads, block size
// 64 and 1.
TEST(AttentionGpuShapeTest, OtherShapes) {
  KVS_REQUIRE_GPU();
  struct OtherShape {
    int32_t head_dim, n_heads, n_kv_heads, block_size, partition;
  };
  for (const OtherShape& s :
       {OtherShape{256, 4, 2, 16, 64}, OtherShape{256, 4, 2, 16, 256},
        OtherShape{128, 12, 1, 16, 64}, OtherShape{128, 12, 1, 16, 256},
        OtherShape{64, 32, 8, 64, 64}, OtherShape{64, 3, 1, 1, 256}}) {
    const std::string shape = absl::StrCat(
        "head_dim ", s.head_dim, " n_heads ", s.n_heads, " n_kv_heads ",
        s.n_kv_heads, " block_size ", s.block_size, " partition ",
        s.partition);
    SCOPED_TRACE(shape);
    const Fixture f(s.n_kv_heads, s.head_dim, s.block_size, s.partition,
                    {1, 300, 700, 1025}, 99);
    const std::vector<Query> qs = {{0, 0},    {1, 299}, {2, 699},
                                   {3, 1024}, {3, 767}, {3, 768}};
    const std::vector<float> q = RandomQ(qs.size() * s.n_heads * s.head_dim, 7);
    const std::vector<float> got = f.Gpu(qs, q.data(), s.n_heads);
    ExpectClose(got, f.Cpu(qs, q.data(), s.n_heads), qs, s.n_heads, s.head_dim,
                kCpuAtol, kCpuRtol, shape + " vs CPU");
    ExpectClose(got, f.Exact(qs, q.data(), s.n_heads), qs, s.n_heads,
                s.head_dim, kExactAtol, kExactRtol, shape + " vs exact");
  }
}

// The most important property: a token's output is bitwise the same when
// computed alone (decode, n_tokens 1, max_position = its position), inside
// a prefill chunk of 512 consecutive tokens of its sequence, and inside a
// batch mixed with other sequences with a much larger max_position.
class AttentionInvarianceTest : public ::testing::TestWithParam<Shape> {};

TEST_P(AttentionInvarianceTest, PrefillDecodeAndMixedBatchesAgreeBitwise) {
  KVS_REQUIRE_GPU();
  const auto [head_dim, n_heads, block_size, partition] = GetParam();
  constexpr int32_t kKvHeads = 2;
  const std::string shape = absl::StrCat(
      "head_dim ", head_dim, " n_heads ", n_heads, " n_kv_heads ", kKvHeads,
      " block_size ", block_size, " partition ", partition);
  SCOPED_TRACE(shape);
  const Fixture f(kKvHeads, head_dim, block_size, partition,
                  {4212, 8192, 700},
                  static_cast<uint32_t>(head_dim + n_heads + block_size));
  const size_t width = size_t(n_heads) * head_dim;
  const size_t row_bytes = width * sizeof(float);
  // Prefill chunks of sequence 0 holding the contexts 300, 1000 and 4099
  // (positions 299, 999, 4098) among others.
  for (const int32_t first : {0, 600, 3700}) {
    std::vector<Query> chunk;
    for (int32_t p = first; p < first + 512; ++p) chunk.push_back({0, p});
    const std::vector<float> q =
        RandomQ(chunk.size() * width, static_cast<uint32_t>(first + 1));
    const std::vector<float> prefill = f.Gpu(chunk, q.data(), n_heads);
    int32_t differing = 0;
    int32_t first_bad = -1;
    for (size_t t = 0; t < chunk.size(); ++t) {
      const std::vector<float> alone =
          f.Gpu({chunk[t]}, q.data() + t * width, n_heads);
      if (std::memcmp(alone.data(), prefill.data() + t * width, row_bytes)) {
        if (differing++ == 0) first_bad = chunk[t].pos;
      }
    }
    EXPECT_EQ(differing, 0)
        << shape << ": prefill chunk at " << first << ": " << differing
        << " tokens differ from decode alone, first at position " << first_bad;

    // The same chunk's tokens picked into a batch with other sequences'
    // tokens (positions up to 8191) and max_position 9000.
    std::vector<Query> mixed;
    std::vector<float> q_mixed;
    std::vector<size_t> from;  // mixed row -> chunk row, or SIZE_MAX
    const std::vector<float> q_other = RandomQ(width, 12345);
    for (size_t t = 0; t < chunk.size(); t += 37) {
      mixed.push_back(chunk[t]);
      from.push_back(t);
      q_mixed.insert(q_mixed.end(), q.begin() + t * width,
                     q.begin() + (t + 1) * width);
      mixed.push_back({static_cast<int32_t>(t % 2 + 1),
                       t % 2 ? 699 : 8191 - static_cast<int32_t>(t)});
      from.push_back(SIZE_MAX);
      q_mixed.insert(q_mixed.end(), q_other.begin(), q_other.end());
    }
    const std::vector<float> got = f.Gpu(mixed, q_mixed.data(), n_heads, 9000);
    for (size_t i = 0; i < mixed.size(); ++i) {
      if (from[i] == SIZE_MAX) continue;
      EXPECT_EQ(0, std::memcmp(got.data() + i * width,
                               prefill.data() + from[i] * width, row_bytes))
          << shape << ": position " << mixed[i].pos
          << " in a mixed batch (max_position 9000) differs from prefill";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionInvarianceTest,
                         ::testing::Values(Shape{128, 8, 16, 64},
                                           Shape{128, 8, 16, 256},
                                           Shape{64, 6, 32, 64},
                                           Shape{128, 16, 32, 256}),
                         ShapeName);

}  // namespace
}  // namespace kvsession::kernels::cuda
