// kvsession-generate: one completion on the command line, streamed to stdout
// as it is produced; prefill and decode speed go to stderr.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "runtime/generate.h"
#include "runtime/model_bundle.h"
#include "service/model_flags.h"

ABSL_FLAG(std::string, prompt, "", "Prompt text (or the user message with --chat)");
ABSL_FLAG(bool, chat, false, "Wrap the prompt in the model's chat template");
ABSL_FLAG(std::string, system, "", "System message with --chat (default: the template's)");
ABSL_FLAG(int32_t, max_tokens, 256, "Maximum tokens to generate");
ABSL_FLAG(float, temperature, 0.0f, "Sampling temperature; 0 is greedy");
ABSL_FLAG(int32_t, top_k, 0, "Top-k sampling; 0 is off");
ABSL_FLAG(float, top_p, 1.0f, "Top-p (nucleus) sampling; 1 is off");
ABSL_FLAG(float, min_p, 0.0f, "Min-p sampling; 0 is off");
ABSL_FLAG(float, repetition_penalty, 1.0f, "Repetition penalty; 1 is off");
ABSL_FLAG(uint64_t, seed, 0, "Sampling seed");
ABSL_FLAG(bool, ignore_eos, false, "Keep generating past end-of-generation tokens");

namespace kvsession {
namespace {

int Run() {
  runtime::ModelBundle::Options load = service::ModelOptionsFromFlags();
  if (load.path.empty()) {
    std::cerr << "--model is required\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<runtime::ModelBundle>> bundle =
      runtime::ModelBundle::Load(load);
  if (!bundle.ok()) {
    std::cerr << "error: " << bundle.status() << "\n";
    return 1;
  }
  runtime::ModelBundle& b = **bundle;

  std::vector<int32_t> prompt;
  if (absl::GetFlag(FLAGS_chat)) {
    std::vector<runtime::ChatMessage> messages;
    if (!absl::GetFlag(FLAGS_system).empty()) {
      messages.push_back({"system", absl::GetFlag(FLAGS_system)});
    }
    messages.push_back({"user", absl::GetFlag(FLAGS_prompt)});
    absl::StatusOr<std::vector<int32_t>> ids = b.EncodeChat(messages, true);
    if (!ids.ok()) {
      std::cerr << "error: " << ids.status() << "\n";
      return 1;
    }
    prompt = *std::move(ids);
  } else {
    prompt = b.tokenizer->Encode(absl::GetFlag(FLAGS_prompt),
                                 /*parse_special=*/false,
                                 /*add_special=*/true);
  }
  if (prompt.empty()) {
    std::cerr << "error: empty prompt\n";
    return 2;
  }

  runtime::GenerateOptions gen;
  gen.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  gen.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  gen.sampling.temperature = absl::GetFlag(FLAGS_temperature);
  gen.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  gen.sampling.top_p = absl::GetFlag(FLAGS_top_p);
  gen.sampling.min_p = absl::GetFlag(FLAGS_min_p);
  gen.sampling.repetition_penalty = absl::GetFlag(FLAGS_repetition_penalty);
  gen.sampling.seed = absl::GetFlag(FLAGS_seed);

  runtime::SequenceRunner::Options ro;
  ro.max_tokens = static_cast<int32_t>(prompt.size()) + gen.max_tokens;
  absl::StatusOr<std::unique_ptr<runtime::SequenceRunner>> runner =
      runtime::SequenceRunner::Create(b.model.get(), ro);
  if (!runner.ok()) {
    std::cerr << "error: " << runner.status() << "\n";
    return 1;
  }
  runtime::StreamingDetokenizer detok(*b.tokenizer);
  absl::StatusOr<runtime::GenerateStats> stats = runtime::Generate(
      **runner, *b.tokenizer, prompt, gen, [&](int32_t token) {
        const std::string text = detok.Push(token);
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      });
  const std::string rest = detok.Flush();
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::fputc('\n', stdout);
  if (!stats.ok()) {
    std::cerr << "error: " << stats.status() << "\n";
    return 1;
  }
  std::fprintf(stderr,
               "prefill: %d tokens in %.3f s (%.1f tokens/s)\n"
               "decode:  %d tokens in %.3f s (%.1f tokens/s), finish: %s\n",
               stats->prompt_tokens, stats->prefill_seconds,
               stats->prompt_tokens / std::max(stats->prefill_seconds, 1e-9),
               stats->generated_tokens, stats->decode_seconds,
               stats->generated_tokens / std::max(stats->decode_seconds, 1e-9),
               runtime::FinishReasonName(stats->finish));
  return 0;
}

}  // namespace
}  // namespace kvsession

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Generates a completion: kvsession-generate --model M --prompt TEXT "
      "[--chat] [--max_tokens N] [--temperature T] [--seed S]");
  absl::ParseCommandLine(argc, argv);
  return kvsession::Run();
}
