// Token sampling: greedy, temperature, top-k, top-p, min-p, repetition
// penalty; seeded so that the same seed gives the same tokens.
#ifndef KVSESSION_RUNTIME_SAMPLER_H_
#define KVSESSION_RUNTIME_SAMPLER_H_

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cpu/ops.h"

namespace kvsession::runtime {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off
  float repetition_penalty = 1.0f;  // 1: off (CTRL-style, as llama.cpp)
  int32_t repetition_window = 64;   // last N tokens penalised
  uint64_t seed = 0;
};

// INVALID_ARGUMENT naming the field when a value is out of range.
absl::Status ValidateSamplingParams(const SamplingParams& params);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks the next token from logits; `history` is the sequence so far (for
  // the repetition penalty). logits are not modified.
  int32_t Sample(std::span<const float> logits,
                 std::span<const int32_t> history);

  // Whether the backend's SampleTokens can serve these parameters (greedy,
  // or temperature with 1 <= top_k <= kMaxSampleTopK, no repetition penalty
  // or min_p). It depends on the parameters only, so a request samples the
  // same way in any batch.
  bool DeviceSamplable() const;
  // The row for SampleTokens; draws the step's uniform from the seeded
  // generator (only when the row is random).
  kernels::SampleRow NextDeviceRow();

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_SAMPLER_H_
