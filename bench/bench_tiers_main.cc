// kvsession-bench-tiers: what a follow-up turn costs when its session's KV is
// resident, swapped out to the host tier, or dropped (recompute), for
// several history lengths; and the swap bandwidth next to this machine's
// plain memcpy bandwidth, measured in the same run. Prints a table; never
// fails on speed.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "runtime/engine.h"
#include "runtime/model_bundle.h"

ABSL_FLAG(std::string, model, "", "Path of a GGUF model file");
ABSL_FLAG(std::string, histories, "256,1024,4096",
          "Comma-separated history lengths in tokens");
ABSL_FLAG(int32_t, threads, 2, "Compute threads");
ABSL_FLAG(int32_t, repetitions, 3, "Runs per configuration (median reported)");

namespace kvsession {
namespace {

using Clock = std::chrono::steady_clock;
using session_store::Tier;

class Waiter : public runtime::TurnObserver {
 public:
  void OnDelta(std::string_view, std::span<const int32_t>) override {}
  void OnDone(const absl::Status& status,
              const runtime::TurnResult& result) override {
    done_.set_value({status, result});
  }
  std::pair<absl::Status, runtime::TurnResult> Get() {
    return done_.get_future().get();
  }

 private:
  std::promise<std::pair<absl::Status, runtime::TurnResult>> done_;
};

runtime::TurnResult Turn(runtime::Engine& engine, const std::string& session,
                         std::vector<int32_t> tokens) {
  runtime::TurnRequest req;
  req.session_id = session;
  req.tokens = std::move(tokens);
  req.max_tokens = 1;
  req.ignore_eos = true;
  auto waiter = std::make_shared<Waiter>();
  engine.Submit(std::move(req), waiter);
  auto [status, result] = waiter->Get();
  if (!status.ok()) {
    std::fprintf(stderr, "turn failed: %s\n", status.ToString().c_str());
    std::exit(1);
  }
  return result;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Best-of-5 memcpy bandwidth over `bytes`, in bytes per second.
double MemcpyBandwidth(size_t bytes) {
  std::vector<char> a(bytes, 1), b(bytes, 0);
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    std::memcpy(b.data(), a.data(), bytes);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, bytes / s);
    a[i] = b[bytes - 1 - i];  // keep the copies observable
  }
  return best;
}

int Run() {
  std::vector<int> histories;
  for (absl::string_view s :
       absl::StrSplit(absl::GetFlag(FLAGS_histories), ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(s, &n) || n <= 1) {
      std::fprintf(stderr, "bad --histories\n");
      return 2;
    }
    histories.push_back(n);
  }
  runtime::ModelBundle::Options load;
  load.path = absl::GetFlag(FLAGS_model);
  load.n_threads = absl::GetFlag(FLAGS_threads);
  absl::StatusOr<std::unique_ptr<runtime::ModelBundle>> bundle =
      runtime::ModelBundle::Load(load);
  if (!bundle.ok()) {
    std::fprintf(stderr, "error: %s\n", bundle.status().ToString().c_str());
    return 1;
  }
  const int max_history = *std::max_element(histories.begin(), histories.end());
  runtime::Engine::Options eo;
  eo.block_size = 16;
  const int64_t per_token = (*bundle)->model->config().KvBytesPerToken();
  // Room for one history (plus a block) on each tier.
  eo.kv_device_bytes = (max_history + 64) * per_token;
  eo.kv_host_bytes = (max_history + 64) * per_token;
  eo.share_prefixes = false;  // each run starts from nothing
  absl::StatusOr<std::unique_ptr<runtime::Engine>> engine =
      runtime::Engine::Create(bundle->get(), eo);
  if (!engine.ok()) {
    std::fprintf(stderr, "error: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  runtime::Engine& e = **engine;
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> dist(
      100, (*bundle)->model->config().vocab_size - 1);

  std::printf("KV bytes per token: %lld; median of %d runs\n",
              static_cast<long long>(per_token),
              absl::GetFlag(FLAGS_repetitions));
  std::printf("%8s %12s %12s %12s %12s %12s %12s %10s\n", "history",
              "resident ms", "swapped ms", "recompute ms", "swap-in ms",
              "copy ms", "swap GB/s", "memcpy GB/s");
  int session_counter = 0;
  for (int history : histories) {
    std::vector<double> resident, swapped, recompute, swap_in, copy, bw;
    for (int rep = 0; rep < absl::GetFlag(FLAGS_repetitions); ++rep) {
      std::vector<int32_t> prompt(history);
      for (int32_t& t : prompt) t = dist(rng);
      const std::string id = "bench-" + std::to_string(++session_counter);
      // The first turn computes the history (prompt + 1 generated token,
      // whose KV lands in the next turn).
      Turn(e, id, prompt);
      absl::StatusOr<std::vector<int32_t>> held = e.SessionTokens(id);
      std::vector<int32_t> next = *held;
      next.push_back(dist(rng));
      // Resident: the follow-up adds one token.
      resident.push_back(Turn(e, id, next).ttft_seconds * 1e3);
      next = *e.SessionTokens(id);
      next.push_back(dist(rng));
      // Swapped: out to host (waited for), then the follow-up swaps in.
      e.EvictAll(Tier::kDevice);
      const double busy0 = e.Stats().copies.busy_seconds;
      const int64_t blocks0 = e.Stats().store.swap_in_blocks;
      runtime::TurnResult r = Turn(e, id, next);
      const runtime::EngineStats st = e.Stats();
      if (r.cached_tier != runtime::CacheTier::kHost) {
        std::fprintf(stderr, "expected a swap-in\n");
        return 1;
      }
      swapped.push_back(r.ttft_seconds * 1e3);
      swap_in.push_back(r.swap_in_seconds * 1e3);
      // The worker's busy time also holds the swap-out of an evicted
      // session's blocks; only swap-in copies run in this turn.
      const double copy_s = st.copies.busy_seconds - busy0;
      copy.push_back(copy_s * 1e3);
      bw.push_back((st.store.swap_in_blocks - blocks0) * 16 * per_token /
                   copy_s / 1e9);
      next = *e.SessionTokens(id);
      next.push_back(dist(rng));
      // Dropped: out of both tiers; the follow-up recomputes everything.
      e.EvictAll(Tier::kDevice);
      e.EvictAll(Tier::kHost);
      r = Turn(e, id, next);
      if (r.cached_tier != runtime::CacheTier::kRecomputed) {
        std::fprintf(stderr, "expected a recompute\n");
        return 1;
      }
      recompute.push_back(r.ttft_seconds * 1e3);
      (void)e.DeleteSession(id);
    }
    const double memcpy_bw =
        MemcpyBandwidth(static_cast<size_t>(history) * per_token) / 1e9;
    std::printf("%8d %12.2f %12.2f %12.2f %12.3f %12.3f %12.2f %10.2f\n",
                history, Median(resident), Median(swapped), Median(recompute),
                Median(swap_in), Median(copy), Median(bw), memcpy_bw);
  }
  return 0;
}

}  // namespace
}  // namespace kvsession

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return kvsession::Run();
}
