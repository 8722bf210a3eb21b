// The /metrics endpoint of an in-process server: scraped over HTTP after a
// few turns, its counters must agree with the turns' summaries and its
// gauges with GetServerInfo.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend_factory.h"
#include "service/metrics.h"
#include "tests/service/test_server.h"

namespace kvsession::testing {
namespace {

using ::testing::HasSubstr;

// The body of GET /metrics, or "" (with a test failure) on any error.
std::string HttpGetMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    ADD_FAILURE() << "socket failed";
    return "";
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    ADD_FAILURE() << "cannot connect to metrics port " << port;
    return "";
  }
  // HTTP/1.0: the server closes the connection after the response.
  const std::string req =
      "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n";
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    ADD_FAILURE() << "short write";
    return "";
  }
  std::string response;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) response.append(buf, n);
  close(fd);
  EXPECT_THAT(response.substr(0, response.find("\r\n")), HasSubstr("200"));
  const size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos) {
    ADD_FAILURE() << "no HTTP body in: " << response;
    return "";
  }
  return response.substr(body + 4);
}

// The value of one exposed series, e.g. `name{label="v"}`; NaN (with a test
// failure) when it is absent.
double SeriesValue(const std::string& text, const std::string& series) {
  const std::string key = "\n" + series + " ";
  const size_t pos = text.find(key);
  if (pos == std::string::npos) {
    ADD_FAILURE() << "series " << series << " is not exposed";
    return std::nan("");
  }
  return std::strtod(text.c_str() + pos + key.size(), nullptr);
}

const char* const kMetricNames[] = {
    "kvsession_prompt_tokens_total",
    "kvsession_cached_prompt_tokens_total",
    "kvsession_prefilled_tokens_total",
    "kvsession_generated_tokens_total",
    "kvsession_evictions_total",
    "kvsession_swap_bytes_total",
    "kvsession_kv_bytes",
    "kvsession_kv_capacity_bytes",
    "kvsession_sessions",
    "kvsession_running_sequences",
    "kvsession_queue_depth",
    "kvsession_ttft_seconds",
    "kvsession_inter_token_seconds",
    "kvsession_swap_in_seconds",
    "kvsession_request_seconds",
    "kvsession_requests_total",
};

TEST(MetricsIntegrationTest, ScrapeAgreesWithTurnsAndServerInfo) {
  // Destroyed in reverse: the exposer stops before the server, and the
  // metrics outlive both.
  service::Metrics metrics;
  TestServerOptions options;
  options.service.metrics = &metrics;
  TestServer server(options);
  metrics.SetEngine(&server.engine());
  absl::StatusOr<std::unique_ptr<prometheus::Exposer>> exposer =
      service::StartMetricsExposer("127.0.0.1:0", &metrics);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const std::vector<int> ports = (*exposer)->GetListeningPorts();
  ASSERT_EQ(ports.size(), 1u);

  int64_t prompt = 0, cached = 0, generated = 0, prefilled = 0;
  int ok_chats = 0, ttft_turns = 0;
  auto add = [&](const TurnOutput& out) {
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    ASSERT_TRUE(out.has_summary);
    prompt += out.summary.prompt_tokens();
    cached += out.summary.cached_tokens();
    prefilled += out.summary.prefilled_tokens();
    generated += out.summary.generated_tokens();
    if (out.summary.generated_tokens() > 0) ++ttft_turns;
  };
  // Three turns of one session: the later ones reuse its device KV.
  for (const char* text : {"Hello there", "Tell me more", "And then?"}) {
    TurnOutput out = RunChat(server.stub(), UserTurn("metrics-s1", text, 6));
    add(out);
    ++ok_chats;
  }
  v1::CompleteRequest complete;
  complete.set_text("Once upon a time");
  complete.set_max_tokens(5);
  add(RunComplete(server.stub(), complete));
  ASSERT_GT(cached, 0) << "the test needs a turn that reuses cached KV";

  v1::ChatRequest malformed = UserTurn("metrics-s2", "hi", 4);
  malformed.clear_messages();
  EXPECT_EQ(RunChat(server.stub(), malformed).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  grpc::ClientContext ctx;
  v1::ServerInfo info;
  ASSERT_TRUE(server.stub()
                  .GetServerInfo(&ctx, v1::GetServerInfoRequest(), &info)
                  .ok());
  int64_t device_used = -1;
  for (const v1::TierInfo& t : info.tiers()) {
    if (t.tier() == "device") device_used = t.used_bytes();
  }
  ASSERT_GT(device_used, 0);

  const std::string text = HttpGetMetrics(ports[0]);
  ASSERT_FALSE(text.empty());
  for (const char* name : kMetricNames) {
    EXPECT_THAT(text, HasSubstr(std::string("# TYPE ") + name + " "));
  }
  EXPECT_EQ(SeriesValue(text, "kvsession_prompt_tokens_total"), prompt);
  EXPECT_EQ(SeriesValue(
                text, "kvsession_cached_prompt_tokens_total{tier=\"device\"}"),
            cached);
  EXPECT_EQ(
      SeriesValue(text, "kvsession_cached_prompt_tokens_total{tier=\"host\"}"),
      0);
  EXPECT_EQ(SeriesValue(text, "kvsession_prefilled_tokens_total"), prefilled);
  EXPECT_EQ(SeriesValue(text, "kvsession_generated_tokens_total"), generated);
  EXPECT_EQ(SeriesValue(text,
                        "kvsession_requests_total{code=\"INVALID_"
                        "ARGUMENT\",rpc=\"Chat\"}"),
            1);
  EXPECT_EQ(
      SeriesValue(text, "kvsession_requests_total{code=\"OK\",rpc=\"Chat\"}"),
      ok_chats);
  EXPECT_EQ(SeriesValue(
                text, "kvsession_requests_total{code=\"OK\",rpc=\"Complete\"}"),
            1);
  EXPECT_EQ(
      SeriesValue(
          text, "kvsession_requests_total{code=\"OK\",rpc=\"GetServerInfo\"}"),
      1);
  EXPECT_EQ(SeriesValue(text, "kvsession_kv_bytes{tier=\"device\"}"),
            device_used);
  EXPECT_EQ(SeriesValue(text, "kvsession_sessions{state=\"resident\"}"), 1);
  EXPECT_EQ(SeriesValue(text, "kvsession_running_sequences"), 0);
  EXPECT_EQ(SeriesValue(text, "kvsession_queue_depth"), 0);
  EXPECT_EQ(SeriesValue(text, "kvsession_ttft_seconds_count"), ttft_turns);
  // Several deltas per turn, so consecutive-delta gaps were observed.
  EXPECT_GT(SeriesValue(text, "kvsession_inter_token_seconds_count"), 0);
  EXPECT_EQ(SeriesValue(text, "kvsession_request_seconds_count{rpc=\"Chat\"}"),
            ok_chats + 1);
  EXPECT_EQ(SeriesValue(text,
                        "kvsession_evictions_total{from=\"device\","
                        "to=\"host\"}"),
            0);
  EXPECT_EQ(SeriesValue(text, "kvsession_swap_bytes_total{direction=\"in\"}"),
            0);
}

TEST(MetricsIntegrationTest, WithoutEngineGaugesStayAtZero) {
  service::Metrics metrics;
  metrics.ObserveRequest("DeleteSession", grpc::StatusCode::NOT_FOUND, 0.002);
  std::string text = "\n";
  text += metrics.Serialize();
  EXPECT_EQ(SeriesValue(text,
                        "kvsession_requests_total{code=\"NOT_FOUND\","
                        "rpc=\"DeleteSession\"}"),
            1);
  EXPECT_EQ(SeriesValue(text, "kvsession_kv_bytes{tier=\"device\"}"), 0);
  EXPECT_EQ(SeriesValue(text,
                        "kvsession_request_seconds_bucket{"
                        "rpc=\"DeleteSession\",le=\"0.01\"}"),
            1);
}


// DESIGN.md: cuBLAS's large static TLS once kept the endpoint's threads
// from starting in a process that linked it. The CUDA backend is a module
// loaded at run time; loading it (a device need not be present: the
// module and cuBLAS load before the device is looked for) must leave the
// endpoint working.
TEST(MetricsIntegrationTest, EndpointStartsWithTheCudaModuleLoaded) {
  kernels::BackendOptions o;
  o.device = "cuda";
  absl::StatusOr<std::unique_ptr<kernels::Backend>> b =
      kernels::CreateBackend(o);
  if (!b.ok() && b.status().message().find("cannot load the CUDA module") !=
                     absl::string_view::npos) {
    GTEST_SKIP() << "built without the CUDA module: " << b.status();
  }
  service::Metrics metrics;
  absl::StatusOr<std::unique_ptr<prometheus::Exposer>> exposer =
      service::StartMetricsExposer("127.0.0.1:0", &metrics);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const std::vector<int> ports = (*exposer)->GetListeningPorts();
  ASSERT_FALSE(ports.empty());
  EXPECT_THAT(HttpGetMetrics(ports[0]), HasSubstr("kvsession_queue_depth"));
}

}  // namespace
}  // namespace kvsession::testing
