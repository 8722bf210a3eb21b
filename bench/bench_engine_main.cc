// kvsession-bench-engine: prefill and decode speed of the engine on one
// sequence (pp512 / tg128 style), for each thread count asked for. Prints a
// table; never fails on speed.
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/generate.h"
#include "runtime/model_bundle.h"

ABSL_FLAG(std::string, model, "", "Path of a GGUF model file");
ABSL_FLAG(int32_t, prompt_tokens, 512, "Prefill length");
ABSL_FLAG(int32_t, gen_tokens, 128, "Decode length");
ABSL_FLAG(std::string, threads, "1,2", "Comma-separated thread counts");
ABSL_FLAG(int32_t, repetitions, 3, "Runs per configuration (best is reported)");
ABSL_FLAG(int32_t, chunk, 512, "Prefill chunk length");

namespace kvsession {
namespace {

int Run() {
  std::vector<int> thread_counts;
  for (absl::string_view s :
       absl::StrSplit(absl::GetFlag(FLAGS_threads), ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(s, &n) || n <= 0) {
      std::fprintf(stderr, "bad --threads\n");
      return 2;
    }
    thread_counts.push_back(n);
  }
  for (int threads : thread_counts) {
    runtime::ModelBundle::Options load;
    load.path = absl::GetFlag(FLAGS_model);
    load.n_threads = threads;
    absl::StatusOr<std::unique_ptr<runtime::ModelBundle>> bundle =
        runtime::ModelBundle::Load(load);
    if (!bundle.ok()) {
      std::fprintf(stderr, "error: %s\n", bundle.status().ToString().c_str());
      return 1;
    }
    runtime::ModelBundle& b = **bundle;
    if (threads == thread_counts[0]) {
      const runtime::ModelConfig& c = b.model->config();
      std::printf("# %s (%s): %d layers, d_model %d, %.1f MB of weights\n",
                  c.name.c_str(), c.architecture.c_str(), c.n_layers,
                  c.d_model, b.model->weight_bytes() / 1e6);
      std::printf("%-8s %-10s %-10s %14s %14s\n", "threads", "prompt",
                  "generate", "prefill tok/s", "decode tok/s");
    }
    // Random token ids, like llama-bench: speed does not depend on content.
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int32_t> dist(
        100, b.model->config().vocab_size - 1);
    std::vector<int32_t> prompt(absl::GetFlag(FLAGS_prompt_tokens));
    for (int32_t& t : prompt) t = dist(rng);

    double best_pp = 0, best_tg = 0;
    for (int rep = 0; rep < absl::GetFlag(FLAGS_repetitions); ++rep) {
      runtime::SequenceRunner::Options ro;
      ro.max_tokens =
          static_cast<int32_t>(prompt.size()) + absl::GetFlag(FLAGS_gen_tokens) + 1;
      ro.max_chunk = absl::GetFlag(FLAGS_chunk);
      absl::StatusOr<std::unique_ptr<runtime::SequenceRunner>> runner =
          runtime::SequenceRunner::Create(b.model.get(), ro);
      if (!runner.ok()) return 1;
      runtime::GenerateOptions gen;
      gen.max_tokens = absl::GetFlag(FLAGS_gen_tokens);
      gen.ignore_eos = true;
      absl::StatusOr<runtime::GenerateStats> st =
          runtime::Generate(**runner, *b.tokenizer, prompt, gen, nullptr);
      if (!st.ok()) {
        std::fprintf(stderr, "error: %s\n", st.status().ToString().c_str());
        return 1;
      }
      best_pp = std::max(best_pp, st->prompt_tokens / st->prefill_seconds);
      best_tg = std::max(best_tg, st->generated_tokens / st->decode_seconds);
    }
    std::printf("%-8d %-10zu %-10d %14.1f %14.1f\n", threads, prompt.size(),
                absl::GetFlag(FLAGS_gen_tokens), best_pp, best_tg);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace kvsession

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return kvsession::Run();
}
