// The reference token sampler (contract in ops.h). Written to be obviously
// right rather than fast: the CUDA op must pick the same ids, so every float
// operation here is one the device repeats in the same order.
//
// Beyond the contract in ops.h: a NaN logit counts as -inf, a NaN
// temperature selects greedy decoding (only temperature > 0 samples), and
// an infinite temperature is taken as FLT_MAX (z stays a monotone function
// of the logit, never inf / inf).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/ops.h"

namespace kvsession::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float Sanitize(float x) { return std::isnan(x) ? kNegInf : x; }

int32_t Greedy(const float* x, int32_t vocab) {
  int32_t best = 0;
  float best_v = Sanitize(x[0]);
  for (int32_t i = 1; i < vocab; ++i) {
    const float v = Sanitize(x[i]);
    if (v > best_v) {  // strict: the lowest id wins ties
      best_v = v;
      best = i;
    }
  }
  return best;
}

// (z, id) ordered by z descending, then id ascending.
struct Candidate {
  float z;
  int32_t id;
};
inline bool Before(const Candidate& a, const Candidate& b) {
  return a.z > b.z || (a.z == b.z && a.id < b.id);
}

int32_t SampleTopK(const float* x, int32_t vocab, const SampleRow& row,
                   std::vector<Candidate>& cands, std::vector<float>& p) {
  const int32_t k = std::min(row.top_k, vocab);
  const float t = std::min(row.temperature, FLT_MAX);
  cands.resize(static_cast<size_t>(vocab));
  for (int32_t i = 0; i < vocab; ++i) {
    // One IEEE division, as on the device.
    cands[size_t(i)] = {Sanitize(x[i]) / t, i};
  }
  std::partial_sort(cands.begin(), cands.begin() + k, cands.end(), Before);

  // Weights relative to the largest z. z == z_max gets exactly 1 so that
  // infinite z (inf - inf) cannot produce NaN: +inf maxima share the mass,
  // and an all -inf row is uniform over its candidates.
  const float z_max = cands[0].z;
  p.resize(static_cast<size_t>(k));
  float sum = 0.0f;
  for (int32_t j = 0; j < k; ++j) {
    const float z = cands[size_t(j)].z;
    p[size_t(j)] = z == z_max ? 1.0f : std::exp(z - z_max);
    sum += p[size_t(j)];  // in candidate order
  }
  for (int32_t j = 0; j < k; ++j) p[size_t(j)] = p[size_t(j)] / sum;

  // Shortest prefix whose cumulative p reaches top_p (all k if none does).
  int32_t n_keep = k;
  float kept = 0.0f;
  for (int32_t j = 0; j < k; ++j) {
    kept += p[size_t(j)];
    if (row.top_p < 1.0f && kept >= row.top_p) {
      n_keep = j + 1;
      break;
    }
  }

  // The running sum repeats the same additions, so it ends at `kept`.
  const float threshold = row.u * kept;
  float running = 0.0f;
  for (int32_t j = 0; j < n_keep; ++j) {
    running += p[size_t(j)];
    if (running > threshold) return cands[size_t(j)].id;
  }
  return cands[size_t(n_keep - 1)].id;
}

}  // namespace

void SampleTokens(const float* logits, int32_t n_rows, int32_t vocab,
                  const SampleRow* rows, int32_t* out, const CpuExec& exec) {
  if (n_rows <= 0) return;
  KVS_CHECK(vocab > 0) << "vocab " << vocab;
  for (int32_t r = 0; r < n_rows; ++r) {
    if (rows[r].temperature > 0.0f) {
      KVS_CHECK(rows[r].top_k >= 1 && rows[r].top_k <= kMaxSampleTopK)
          << "row " << r << " top_k " << rows[r].top_k;
    }
  }
#pragma omp parallel num_threads(exec.n_threads) if (n_rows > 1)
  {
    std::vector<Candidate> cands;  // per thread, reused across rows
    std::vector<float> p;
#pragma omp for schedule(static)
    for (int32_t r = 0; r < n_rows; ++r) {
      const float* x = logits + int64_t{r} * vocab;
      const SampleRow& row = rows[r];
      out[r] = row.temperature > 0.0f ? SampleTopK(x, vocab, row, cands, p)
                                      : Greedy(x, vocab);
    }
  }
}

}  // namespace kvsession::kernels
