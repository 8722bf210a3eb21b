#include "service/metrics.h"

#include <algorithm>
#include <exception>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"
#include "session_store/session_store.h"

namespace kvsession::service {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

constexpr const char* kRpcs[] = {"Chat",          "Complete",
                                 "GetSession",    "ListSessions",
                                 "DeleteSession", "GetServerInfo"};

}  // namespace

// What the exposer scrapes: the registry, with the gauges refreshed first.
class Metrics::View final : public prometheus::Collectable {
 public:
  explicit View(Metrics* metrics) : metrics_(metrics) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    metrics_->RefreshGauges();
    return metrics_->registry_->Collect();
  }

 private:
  Metrics* metrics_;
};

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  prompt_tokens_ = &BuildCounter()
                        .Name("kvsession_prompt_tokens_total")
                        .Help("Prompt tokens of finished turns")
                        .Register(r)
                        .Add({});
  auto& cached = BuildCounter()
                     .Name("kvsession_cached_prompt_tokens_total")
                     .Help(
                         "Prompt tokens whose KV was reused, by the tier "
                         "it came from")
                     .Register(r);
  cached_device_ = &cached.Add({{"tier", "device"}});
  cached_host_ = &cached.Add({{"tier", "host"}});
  prefilled_tokens_ = &BuildCounter()
                           .Name("kvsession_prefilled_tokens_total")
                           .Help("Prompt tokens computed by prefill")
                           .Register(r)
                           .Add({});
  generated_tokens_ = &BuildCounter()
                           .Name("kvsession_generated_tokens_total")
                           .Help("Tokens generated")
                           .Register(r)
                           .Add({});
  // Cumulative in the store; RefreshGauges adds what is new since the
  // last scrape. Every series exists from the start, at 0.
  auto& evictions = BuildCounter()
                        .Name("kvsession_evictions_total")
                        .Help("Sessions whose KV moved down a tier")
                        .Register(r);
  evicted_device_host_ = &evictions.Add({{"from", "device"}, {"to", "host"}});
  evicted_device_dropped_ =
      &evictions.Add({{"from", "device"}, {"to", "dropped"}});
  evicted_host_dropped_ = &evictions.Add({{"from", "host"}, {"to", "dropped"}});
  auto& swap_bytes = BuildCounter()
                         .Name("kvsession_swap_bytes_total")
                         .Help("KV bytes copied between device and host")
                         .Register(r);
  swap_bytes_in_ = &swap_bytes.Add({{"direction", "in"}});
  swap_bytes_out_ = &swap_bytes.Add({{"direction", "out"}});
  requests_ = &BuildCounter()
                   .Name("kvsession_requests_total")
                   .Help("Finished RPCs by method and gRPC status code")
                   .Register(r);
  for (const char* rpc : kRpcs) requests_->Add({{"rpc", rpc}, {"code", "OK"}});

  auto& kv_bytes = BuildGauge()
                       .Name("kvsession_kv_bytes")
                       .Help("KV cache bytes in use, by tier")
                       .Register(r);
  kv_bytes_device_ = &kv_bytes.Add({{"tier", "device"}});
  kv_bytes_host_ = &kv_bytes.Add({{"tier", "host"}});
  auto& kv_capacity = BuildGauge()
                          .Name("kvsession_kv_capacity_bytes")
                          .Help("KV cache capacity in bytes, by tier")
                          .Register(r);
  kv_capacity_device_ = &kv_capacity.Add({{"tier", "device"}});
  kv_capacity_host_ = &kv_capacity.Add({{"tier", "host"}});
  auto& sessions = BuildGauge()
                       .Name("kvsession_sessions")
                       .Help(
                           "Sessions by where their KV is: resident "
                           "(device), swapped (host) or dropped")
                       .Register(r);
  sessions_resident_ = &sessions.Add({{"state", "resident"}});
  sessions_swapped_ = &sessions.Add({{"state", "swapped"}});
  sessions_dropped_ = &sessions.Add({{"state", "dropped"}});
  running_sequences_ = &BuildGauge()
                            .Name("kvsession_running_sequences")
                            .Help("Turns prefilling or generating")
                            .Register(r)
                            .Add({});
  queue_depth_ = &BuildGauge()
                      .Name("kvsession_queue_depth")
                      .Help("Turns waiting to start")
                      .Register(r)
                      .Add({});

  ttft_ = &BuildHistogram()
               .Name("kvsession_ttft_seconds")
               .Help("Time to first token of turns that generated one")
               .Register(r)
               .Add({}, kTtftBuckets);
  inter_token_ = &BuildHistogram()
                      .Name("kvsession_inter_token_seconds")
                      .Help("Time between consecutive streamed deltas")
                      .Register(r)
                      .Add({}, kInterTokenBuckets);
  swap_in_ = &BuildHistogram()
                  .Name("kvsession_swap_in_seconds")
                  .Help("Time to bring a session's KV back from host memory")
                  .Register(r)
                  .Add({}, kSwapInBuckets);
  request_seconds_ = &BuildHistogram()
                          .Name("kvsession_request_seconds")
                          .Help("RPC duration, from arrival to final status")
                          .Register(r);
  for (const char* rpc : kRpcs) {
    request_seconds_->Add({{"rpc", rpc}}, kRequestBuckets);
  }
  view_ = std::make_shared<View>(this);
}

Metrics::~Metrics() = default;

void Metrics::SetEngine(runtime::Engine* engine) {
  std::lock_guard<std::mutex> lock(engine_mu_);
  engine_ = engine;
}

void Metrics::ObserveTurn(const runtime::TurnResult& r) {
  prompt_tokens_->Increment(r.prompt_tokens);
  if (r.cached_tier == runtime::CacheTier::kHost) {
    cached_host_->Increment(r.cached_tokens);
    swap_in_->Observe(r.swap_in_seconds);
  } else {
    // Device, or a recomputed session that found blocks other sessions
    // share on the device.
    cached_device_->Increment(r.cached_tokens);
  }
  prefilled_tokens_->Increment(r.prefilled_tokens);
  generated_tokens_->Increment(r.generated_tokens);
  if (r.generated_tokens > 0) ttft_->Observe(r.ttft_seconds);
}

void Metrics::ObserveInterToken(double seconds) {
  inter_token_->Observe(seconds);
}

void Metrics::ObserveRequest(std::string_view rpc, int grpc_code,
                             double seconds) {
  // gRPC and absl share the canonical code numbers and names.
  const std::string code =
      absl::StatusCodeToString(static_cast<absl::StatusCode>(grpc_code));
  const std::string name(rpc);
  requests_->Add({{"rpc", name}, {"code", code}}).Increment();
  request_seconds_->Add({{"rpc", name}}, kRequestBuckets).Observe(seconds);
}

void Metrics::RefreshGauges() {
  std::lock_guard<std::mutex> lock(engine_mu_);
  if (engine_ == nullptr) return;
  const runtime::EngineStats s = engine_->Stats();
  using session_store::Tier;
  const session_store::StoreStats& st = s.store;
  kv_bytes_device_->Set(static_cast<double>(st.tier(Tier::kDevice).used_bytes));
  kv_bytes_host_->Set(static_cast<double>(st.tier(Tier::kHost).used_bytes));
  kv_capacity_device_->Set(
      static_cast<double>(st.tier(Tier::kDevice).capacity_bytes));
  kv_capacity_host_->Set(
      static_cast<double>(st.tier(Tier::kHost).capacity_bytes));
  sessions_resident_->Set(st.tier(Tier::kDevice).sessions);
  sessions_swapped_->Set(st.tier(Tier::kHost).sessions);
  sessions_dropped_->Set(st.tier(Tier::kDropped).sessions);
  running_sequences_->Set(s.running_sequences);
  queue_depth_->Set(s.queue_depth);
  auto advance = [](prometheus::Counter* c, int64_t total, int64_t& seen) {
    if (total > seen) c->Increment(static_cast<double>(total - seen));
    seen = std::max(seen, total);
  };
  advance(evicted_device_host_, st.evicted(Tier::kDevice, Tier::kHost),
          seen_.device_host);
  advance(evicted_device_dropped_, st.evicted(Tier::kDevice, Tier::kDropped),
          seen_.device_dropped);
  advance(evicted_host_dropped_, st.evicted(Tier::kHost, Tier::kDropped),
          seen_.host_dropped);
  advance(swap_bytes_in_, st.swap_in_blocks * s.kv_block_bytes,
          seen_.swap_in_bytes);
  advance(swap_bytes_out_, st.swap_out_blocks * s.kv_block_bytes,
          seen_.swap_out_bytes);
}

std::string Metrics::Serialize() {
  return prometheus::TextSerializer().Serialize(view_->Collect());
}

absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetricsExposer(
    const std::string& bind_address, Metrics* metrics) {
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(bind_address);
  } catch (const std::exception& e) {
    // civetweb reports both a busy port and failed thread creation (small
    // default stacks, see DESIGN.md) as a bind error.
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", bind_address, ": ", e.what()));
  }
  exposer->RegisterCollectable(metrics->collectable());
  return exposer;
}

}  // namespace kvsession::service
