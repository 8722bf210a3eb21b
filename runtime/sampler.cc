#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/check.h"

namespace kvsession::runtime {
namespace {

// Higher logit first, lower id on ties: a total order, so the candidate
// list (and hence the token a seed draws) does not depend on the sort used.
bool Before(const std::pair<float, int32_t>& a,
            const std::pair<float, int32_t>& b) {
  return a.first != b.first ? a.first > b.first : a.second < b.second;
}

// Sum of the candidates' weights, in order, as the draw accumulates them.
double Total(const std::vector<std::pair<float, int32_t>>& cand) {
  double total = 0.0;
  for (const auto& c : cand) total += c.first;
  return total;
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  // Written as !(in range) so that NaN is rejected too.
  if (!(p.temperature >= 0.0f && p.temperature <= 100.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be in [0, 100], got ", p.temperature));
  }
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be >= 0, got ", p.top_k));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  }
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_p must be in [0, 1], got ", p.min_p));
  }
  if (!(p.repetition_penalty > 0.0f && p.repetition_penalty <= 10.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "repetition_penalty must be in (0, 10], got ", p.repetition_penalty));
  }
  if (p.repetition_window < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "repetition_window must be >= 0, got ", p.repetition_window));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params)
    : params_(params), rng_(params.seed) {}

bool Sampler::DeviceSamplable() const {
  if (params_.repetition_penalty != 1.0f || params_.min_p > 0.0f) return false;
  if (params_.temperature <= 0.0f) return true;
  return params_.top_k >= 1 && params_.top_k <= kernels::kMaxSampleTopK;
}

kernels::SampleRow Sampler::NextDeviceRow() {
  kernels::SampleRow r;
  r.temperature = params_.temperature;
  if (r.temperature > 0.0f) {
    r.top_k = params_.top_k;
    r.top_p = params_.top_p;
    // 24 random bits: u in [0, 1) exactly representable.
    r.u = static_cast<float>(rng_() >> 40) * (1.0f / 16777216.0f);
  }
  return r;
}

int32_t Sampler::Sample(std::span<const float> logits,
                        std::span<const int32_t> history) {
  KVS_CHECK(!logits.empty()) << "no logits to sample from";
  const auto n = static_cast<int32_t>(logits.size());
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  auto clean = [](float l) { return std::isnan(l) ? kNegInf : l; };

  // Penalised tokens with their new logits, once per distinct token of the
  // window (llama.cpp's CTRL-style rule). The caller's logits stay as they
  // are; full passes read them and patch these few in.
  std::vector<std::pair<int32_t, float>> penalised;
  const float penalty = params_.repetition_penalty;
  if (penalty != 1.0f && params_.repetition_window > 0) {
    size_t window = std::min(history.size(),
                             static_cast<size_t>(params_.repetition_window));
    for (int32_t id : history.subspan(history.size() - window)) {
      if (id >= 0 && id < n) penalised.emplace_back(id, 0.0f);
    }
    std::sort(penalised.begin(), penalised.end());
    penalised.erase(std::unique(penalised.begin(), penalised.end()),
                    penalised.end());
    for (auto& [id, value] : penalised) {
      float l = clean(logits[id]);
      value = l > 0.0f ? l / penalty : l * penalty;
    }
  }
  // Checked only when a token would enter a selection, which is rare.
  auto is_penalised = [&](int32_t id) {
    return std::binary_search(
        penalised.begin(), penalised.end(), std::pair<int32_t, float>(id, 0),
        [](const auto& a, const auto& b) { return a.first < b.first; });
  };

  // Argmax: strict comparisons in id order keep the lowest id on ties.
  int32_t best = -1;
  float max_logit = kNegInf;
  for (int32_t i = 0; i < n; ++i) {
    if (logits[i] > max_logit && !is_penalised(i)) {
      max_logit = logits[i];
      best = i;
    }
  }
  for (const auto& [id, value] : penalised) {
    if (value > max_logit || (value == max_logit && id < best)) {
      max_logit = value;
      best = id;
    }
  }
  // Greedy, or nothing is possible (all -inf or NaN): the lowest best id.
  if (params_.temperature <= 0.0f || best < 0) return std::max(best, 0);

  // Candidates as (weight, id), weight = exp((logit - max) / T), so the most
  // probable one weighs exactly 1. `head` candidates at the front are sorted
  // by Before and outrank all others.
  const float inv_t = 1.0f / params_.temperature;
  if (!std::isfinite(inv_t)) return best;  // a denormal temperature: greedy
  auto& cand = scratch_;
  size_t head = 0;
  if (params_.top_k > 0 && params_.top_k < n) {
    // Keep the k best in a heap whose top is the worst of them.
    cand.clear();
    const auto k = static_cast<size_t>(params_.top_k);
    auto offer = [&](float value, int32_t id) {
      if (cand.size() < k) {
        cand.emplace_back(value, id);
        std::push_heap(cand.begin(), cand.end(), Before);
      } else if (Before({value, id}, cand.front())) {
        std::pop_heap(cand.begin(), cand.end(), Before);
        cand.back() = {value, id};
        std::push_heap(cand.begin(), cand.end(), Before);
      }
    };
    for (int32_t i = 0; i < n; ++i) {
      // Later ids lose ties, so only a strictly larger logit can enter.
      if ((cand.size() < k || logits[i] > cand.front().first) &&
          !is_penalised(i)) {
        offer(clean(logits[i]), i);
      }
    }
    for (const auto& [id, value] : penalised) offer(value, id);
    std::sort_heap(cand.begin(), cand.end(), Before);
    head = cand.size();
    for (auto& c : cand) c.first = std::exp((c.first - max_logit) * inv_t);
  } else {
    cand.resize(n);
    for (int32_t i = 0; i < n; ++i) {
      cand[i] = {std::exp((clean(logits[i]) - max_logit) * inv_t), i};
    }
    for (const auto& [id, value] : penalised) {
      cand[id].first = std::exp((value - max_logit) * inv_t);
    }
  }
  double total = Total(cand);

  if (params_.top_p < 1.0f) {
    // Smallest head whose mass reaches top_p. Usually a short head does, so
    // rather than sort everything, move the candidates above a falling
    // weight threshold to the front and sort just those, until it suffices.
    const double target = static_cast<double>(params_.top_p) * total;
    double cum = 0.0;
    size_t keep = cand.size();
    float threshold = 1e-2f;
    for (size_t i = 0;;) {
      if (i == head) {
        if (head == cand.size()) break;  // rounding: keep them all
        auto rest = cand.begin() + static_cast<ptrdiff_t>(head);
        auto end = std::partition(rest, cand.end(), [threshold](const auto& c) {
          return c.first >= threshold;
        });
        std::sort(rest, end, Before);
        head = static_cast<size_t>(end - cand.begin());
        threshold = threshold > 1e-30f ? threshold * 1e-2f : -1.0f;
        continue;  // the head may not have grown; lower the threshold again
      }
      cum += cand[i].first;
      if (cum >= target) {
        keep = i + 1;
        break;
      }
      ++i;
    }
    if (keep < cand.size()) {
      cand.resize(keep);
      total = cum;  // the same sum, in the order the draw adds them up
    }
  }

  if (params_.min_p > 0.0f) {
    // Weights are relative to the most probable candidate (weight 1), which
    // therefore always stays.
    const float floor = params_.min_p;
    if (std::erase_if(cand,
                      [floor](const auto& c) { return c.first < floor; })) {
      total = Total(cand);
    }
  }

  // Draw. The uniform double is built from the top 53 bits by hand:
  // std::uniform_real_distribution differs between standard libraries.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * total;
  double cum = 0.0;
  for (const auto& [weight, id] : cand) {
    cum += weight;
    if (u < cum) return id;
  }
  return cand.back().second;  // u rounded onto the total
}

}  // namespace kvsession::runtime
