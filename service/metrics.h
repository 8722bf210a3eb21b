// Prometheus metrics of the service (names in DESIGN.md, "Metrics"). Token
// counters and latency histograms are fed per finished call by the service;
// gauges are read from the engine when /metrics is scraped, so they cost
// nothing between scrapes.
#ifndef KVSESSION_SERVICE_METRICS_H_
#define KVSESSION_SERVICE_METRICS_H_

#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "runtime/engine.h"

namespace kvsession::service {

// Histogram buckets, in seconds. TTFT and whole requests span from a cached
// short turn (milliseconds) to a long prefill on CPU (a minute or more).
inline const prometheus::Histogram::BucketBoundaries kTtftBuckets = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
inline const prometheus::Histogram::BucketBoundaries kInterTokenBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
inline const prometheus::Histogram::BucketBoundaries kSwapInBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
inline const prometheus::Histogram::BucketBoundaries kRequestBuckets = {
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};

// Thread-safe: the Observe*/Count* methods are called from gRPC and engine
// threads, Collect() from the HTTP exposer's threads.
class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // The engine whose stats the gauges show. Scrapes call the blocking
  // Engine::Stats() on the exposer's thread (never a gRPC thread). Set it to
  // null before the engine goes away; that waits for a scrape in progress.
  void SetEngine(runtime::Engine* engine);

  // A finished turn (Chat/Complete): token counters, TTFT and swap-in time.
  void ObserveTurn(const runtime::TurnResult& result);
  // Time between two consecutive streamed deltas of one turn.
  void ObserveInterToken(double seconds);
  // Any finished RPC, with the gRPC status it ended with.
  void ObserveRequest(std::string_view rpc, int grpc_code, double seconds);

  // Refreshes the gauges from the engine and returns every family. Whoever
  // scrapes it (an Exposer) must stop before this object is destroyed.
  std::shared_ptr<prometheus::Collectable> collectable() { return view_; }
  // The text exposition of collectable(), as /metrics serves it.
  std::string Serialize();

 private:
  class View;
  void RefreshGauges();

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> view_;
  std::mutex engine_mu_;  // guards engine_ and serializes gauge refreshes
  runtime::Engine* engine_ = nullptr;

  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* cached_device_;
  prometheus::Counter* cached_host_;
  prometheus::Counter* prefilled_tokens_;
  prometheus::Counter* generated_tokens_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Gauge* kv_bytes_device_;
  prometheus::Gauge* kv_bytes_host_;
  prometheus::Gauge* kv_capacity_device_;
  prometheus::Gauge* kv_capacity_host_;
  prometheus::Gauge* sessions_resident_;
  prometheus::Gauge* sessions_swapped_;
  prometheus::Gauge* sessions_dropped_;
  prometheus::Gauge* running_sequences_;
  prometheus::Gauge* queue_depth_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* inter_token_;
  prometheus::Histogram* swap_in_;
  prometheus::Counter* evicted_device_host_;
  prometheus::Counter* evicted_device_dropped_;
  prometheus::Counter* evicted_host_dropped_;
  prometheus::Counter* swap_bytes_in_;
  prometheus::Counter* swap_bytes_out_;
  // Store totals already added to the counters above (under engine_mu_).
  struct Seen {
    int64_t device_host = 0;
    int64_t device_dropped = 0;
    int64_t host_dropped = 0;
    int64_t swap_in_bytes = 0;
    int64_t swap_out_bytes = 0;
  } seen_;
  prometheus::Family<prometheus::Histogram>* request_seconds_;
};

// Serves GET /metrics on `bind_address` ("host:port"; port 0 picks a free
// one, see Exposer::GetListeningPorts). Fails instead of throwing when the
// port cannot be bound or the HTTP threads cannot start.
absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetricsExposer(
    const std::string& bind_address, Metrics* metrics);

}  // namespace kvsession::service

#endif  // KVSESSION_SERVICE_METRICS_H_
