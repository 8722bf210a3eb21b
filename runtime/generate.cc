#include "runtime/generate.h"

#include <chrono>
#include <vector>

namespace kvsession::runtime {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kContext:
      return "context";
  }
  return "unknown";
}

absl::StatusOr<GenerateStats> Generate(
    SequenceRunner& runner, const Tokenizer& tokenizer,
    std::span<const int32_t> prompt, const GenerateOptions& options,
    const std::function<void(int32_t)>& on_token) {
  using Clock = std::chrono::steady_clock;
  if (absl::Status s = ValidateSamplingParams(options.sampling); !s.ok()) {
    return s;
  }
  if (prompt.empty()) {
    return absl::InvalidArgumentError("generate: empty prompt");
  }
  GenerateStats stats;
  stats.prompt_tokens = static_cast<int32_t>(prompt.size());
  Sampler sampler(options.sampling);
  std::vector<float> logits;
  const auto t0 = Clock::now();
  if (absl::Status s = runner.Append(prompt, LogitsMode::kLast, &logits);
      !s.ok()) {
    return s;
  }
  const auto t1 = Clock::now();
  stats.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  stats.finish = FinishReason::kLength;
  while (stats.generated_tokens < options.max_tokens) {
    const int32_t token = sampler.Sample(logits, runner.tokens());
    ++stats.generated_tokens;
    const bool end = !options.ignore_eos && tokenizer.IsEndOfGeneration(token);
    if (runner.tokens().size() >= static_cast<size_t>(runner.capacity())) {
      if (on_token) on_token(token);
      stats.finish = FinishReason::kContext;
      break;
    }
    // Every generated token goes into the history with its KV (the next turn
    // continues after it); logits are computed only if another token follows.
    const bool last = end || stats.generated_tokens == options.max_tokens;
    const int32_t one[] = {token};
    if (absl::Status s = runner.Append(
            one, last ? LogitsMode::kNone : LogitsMode::kLast, &logits);
        !s.ok()) {
      return s;
    }
    if (on_token) on_token(token);
    if (end) {
      stats.finish = FinishReason::kStop;
      break;
    }
  }
  stats.decode_seconds =
      std::chrono::duration<double>(Clock::now() - t1).count();
  return stats;
}

}  // namespace kvsession::runtime
