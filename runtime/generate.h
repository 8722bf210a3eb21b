// Greedy or sampled generation for one sequence: prefill the prompt, then
// decode token by token, reporting each token as it is produced.
#ifndef KVSESSION_RUNTIME_GENERATE_H_
#define KVSESSION_RUNTIME_GENERATE_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/sampler.h"
#include "runtime/sequence_runner.h"
#include "runtime/tokenizer.h"

namespace kvsession::runtime {

struct GenerateOptions {
  int32_t max_tokens = 256;
  SamplingParams sampling;
  bool ignore_eos = false;
};

enum class FinishReason { kStop, kLength, kContext };
const char* FinishReasonName(FinishReason r);

struct GenerateStats {
  int32_t prompt_tokens = 0;
  int32_t generated_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;  // from the first to the last generated token
  FinishReason finish = FinishReason::kLength;
};

// Appends `prompt` to the runner and generates. on_token sees every
// generated token (an end-of-generation token ends the turn and is reported
// and kept in the runner's history too, as it will be in a chat transcript).
absl::StatusOr<GenerateStats> Generate(
    SequenceRunner& runner, const Tokenizer& tokenizer,
    std::span<const int32_t> prompt, const GenerateOptions& options,
    const std::function<void(int32_t)>& on_token);

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_GENERATE_H_
