// kvsession-server: the gRPC service on one model.
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "kernels/backend_factory.h"
#include "runtime/engine.h"
#include "runtime/model_bundle.h"
#include "service/model_flags.h"
#include "service/kvsession_service.h"
#include "service/metrics.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on");
ABSL_FLAG(int32_t, port, 50051, "gRPC port");
ABSL_FLAG(int32_t, metrics_port, 9090,
          "Prometheus /metrics port (on --host); 0 disables it");
ABSL_FLAG(int64_t, kv_device_bytes, 512ll << 20,
          "KV cache capacity of the device tier in bytes");
ABSL_FLAG(double, kv_device_fraction, 0,
          "GPU backend: when > 0, the device KV tier takes this fraction of "
          "the device memory free after the weights are loaded (overrides "
          "--kv_device_bytes)");
ABSL_FLAG(int64_t, kv_host_bytes, 2ll << 30,
          "KV capacity of the host tier (swapped-out sessions) in bytes; 0: "
          "evicted sessions are dropped and recomputed on their next turn");
ABSL_FLAG(double, kv_pinned_fraction, 0.5,
          "Share of the device tier that pinned sessions may hold");
ABSL_FLAG(int32_t, device_idle_ttl_s, 0,
          "Idle sessions are swapped out to host after this long; 0: only "
          "when the device is full");
ABSL_FLAG(int32_t, host_idle_ttl_s, 0,
          "Swapped-out sessions are dropped (history kept) after this long "
          "idle; 0: only when the host tier is full");
ABSL_FLAG(bool, share_prefixes, true,
          "Sessions that start with the same tokens share those KV blocks");
ABSL_FLAG(int32_t, block_size, 16, "Tokens per KV block");
ABSL_FLAG(int32_t, max_batch_tokens, 512, "Tokens per engine step (decode + prefill chunks)");
ABSL_FLAG(int32_t, max_running, 64, "Sequences generating at once; more wait in the queue");
ABSL_FLAG(int32_t, max_sessions, 10000, "Sessions kept at most");
ABSL_FLAG(int32_t, session_idle_ttl_s, 3600, "Idle sessions older than this are removed");
ABSL_FLAG(int32_t, default_max_tokens, 256, "max_tokens of requests that leave it 0");
ABSL_FLAG(int32_t, max_tokens_limit, 4096, "Largest max_tokens a request may ask for");
ABSL_FLAG(int32_t, max_message_bytes, 64 * 1024, "Largest message content in bytes");
ABSL_FLAG(int32_t, shutdown_grace_s, 30,
          "On SIGTERM/SIGINT, running streams get this long to finish");
ABSL_FLAG(bool, log_turns, true, "Log one line per turn to stderr");

namespace kvsession {
namespace {

int Run() {
  // Block the stop signals before any thread starts so that only the
  // waiter below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  runtime::ModelBundle::Options load = service::ModelOptionsFromFlags();
  if (load.path.empty()) {
    std::fprintf(stderr, "--model is required\n");
    return 2;
  }
  absl::StatusOr<std::unique_ptr<runtime::ModelBundle>> bundle =
      runtime::ModelBundle::Load(load);
  if (!bundle.ok()) {
    std::fprintf(stderr, "error: %s\n", bundle.status().ToString().c_str());
    return 1;
  }
  kernels::Backend& backend = *(*bundle)->backend;
  std::fprintf(stderr, "kvsession-server: backend %s\n",
               std::string(backend.name()).c_str());
  if (const std::string why = kernels::LastAutoFallbackReason();
      load.device == "auto" && !why.empty()) {
    std::fprintf(stderr, "kvsession-server: no CUDA backend (%s)\n",
                 why.c_str());
  }
  runtime::Engine::Options eo;
  eo.block_size = absl::GetFlag(FLAGS_block_size);
  eo.kv_device_bytes = absl::GetFlag(FLAGS_kv_device_bytes);
  if (const double f = absl::GetFlag(FLAGS_kv_device_fraction); f > 0) {
    const kernels::MemoryInfo mem = backend.GetMemoryInfo();
    if (f >= 1 || mem.total_bytes == 0) {
      std::fprintf(stderr,
                   "error: --kv_device_fraction needs a GPU backend and a "
                   "value in (0, 1)\n");
      return 2;
    }
    eo.kv_device_bytes =
        static_cast<int64_t>(f * static_cast<double>(mem.free_bytes));
  }
  eo.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  eo.max_running = absl::GetFlag(FLAGS_max_running);
  eo.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  eo.default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens);
  eo.idle_ttl = absl::Seconds(absl::GetFlag(FLAGS_session_idle_ttl_s));
  eo.kv_host_bytes = absl::GetFlag(FLAGS_kv_host_bytes);
  eo.share_prefixes = absl::GetFlag(FLAGS_share_prefixes);
  eo.max_pinned_fraction = absl::GetFlag(FLAGS_kv_pinned_fraction);
  auto ttl = [](int32_t s) {
    return s > 0 ? absl::Seconds(s) : absl::InfiniteDuration();
  };
  eo.device_idle_ttl = ttl(absl::GetFlag(FLAGS_device_idle_ttl_s));
  eo.host_idle_ttl = ttl(absl::GetFlag(FLAGS_host_idle_ttl_s));
  absl::StatusOr<std::unique_ptr<runtime::Engine>> engine =
      runtime::Engine::Create(bundle->get(), eo);
  if (!engine.ok()) {
    std::fprintf(stderr, "error: %s\n", engine.status().ToString().c_str());
    return 1;
  }

  service::KvSessionService::Options so;
  so.limits.max_tokens = absl::GetFlag(FLAGS_max_tokens_limit);
  so.limits.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  so.model_path = load.path;
  so.log_turns = absl::GetFlag(FLAGS_log_turns);
  // Declared after the engine so that it, and the exposer scraping it, go
  // away first.
  service::Metrics metrics;
  std::unique_ptr<prometheus::Exposer> exposer;
  if (const int32_t mport = absl::GetFlag(FLAGS_metrics_port); mport != 0) {
    metrics.SetEngine(engine->get());
    const std::string maddr =
        absl::StrCat(absl::GetFlag(FLAGS_host), ":", mport);
    absl::StatusOr<std::unique_ptr<prometheus::Exposer>> started =
        service::StartMetricsExposer(maddr, &metrics);
    if (started.ok()) {
      exposer = *std::move(started);
      so.metrics = &metrics;
      std::fprintf(stderr, "kvsession-server: metrics on http://%s/metrics\n",
                   maddr.c_str());
    } else {
      // Fail fast: dashboards and alerts depend on the endpoint, and a
      // taken port is a deployment error (--metrics_port=0 disables it).
      std::fprintf(stderr, "error: %s\n", started.status().ToString().c_str());
      return 1;
    }
  }
  service::KvSessionService service(engine->get(), so);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address =
      absl::StrCat(absl::GetFlag(FLAGS_host), ":", absl::GetFlag(FLAGS_port));
  int bound_port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(),
                           &bound_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    std::fprintf(stderr, "error: cannot listen on %s\n", address.c_str());
    return 1;
  }
  const runtime::ModelConfig& c = (*bundle)->model->config();
  std::fprintf(stderr,
               "kvsession-server: %s (%s, %d layers, context %d) on %s:%d, "
               "KV tiers: device %lld bytes, host %lld bytes\n",
               c.name.c_str(), c.architecture.c_str(), c.n_layers,
               c.context_length, absl::GetFlag(FLAGS_host).c_str(), bound_port,
               static_cast<long long>(eo.kv_device_bytes),
               static_cast<long long>(eo.kv_host_bytes));
  std::fprintf(stderr,
               "chat with it: build/bin/kvsession-chat --addr localhost:%d\n",
               bound_port);

  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "kvsession-server: signal %d, draining (grace %d s)\n",
               sig, absl::GetFlag(FLAGS_shutdown_grace_s));
  server->GetHealthCheckService()->SetServingStatus(false);
  service.BeginDrain();
  // Stops accepting at once, lets running streams finish until the grace
  // deadline, then cancels the rest (the engine ends them cleanly).
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::seconds(absl::GetFlag(FLAGS_shutdown_grace_s)));
  (*engine)->Stop();
  server->Wait();
  exposer.reset();
  metrics.SetEngine(nullptr);
  std::fprintf(stderr, "kvsession-server: stopped\n");
  return 0;
}

}  // namespace
}  // namespace kvsession

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serves a GGUF model over gRPC: kvsession-server --model M --port P");
  absl::ParseCommandLine(argc, argv);
  return kvsession::Run();
}
