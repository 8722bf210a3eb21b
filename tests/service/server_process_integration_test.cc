// kvsession-server and kvsession-chat as real processes on loopback: the
// chat client from a pipe, and SIGTERM while streams are running.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "grpcpp/generic/generic_stub.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/runtime/tiny_model.h"
#include "tests/service/test_server.h"

namespace kvsession::testing {
namespace {

using ::testing::HasSubstr;

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

class ServerProcess {
 public:
  explicit ServerProcess(int grace_s, int metrics_port = 0,
                         const std::string& model_path = "")
      : port_(FreePort()) {
    const std::string model =
        "--model=" + (model_path.empty() ? TinyModelPath() : model_path);
    const std::string port = "--port=" + std::to_string(port_);
    const std::string grace = "--shutdown_grace_s=" + std::to_string(grace_s);
    const std::string metrics = "--metrics_port=" + std::to_string(metrics_port);
    pid_ = fork();
    if (pid_ == 0) {
      execl(KVSESSION_SERVER_BIN, KVSESSION_SERVER_BIN, model.c_str(),
            port.c_str(), grace.c_str(), metrics.c_str(), "--host=127.0.0.1",
            "--threads=1", "--log_turns=false", "--device=cpu",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    // Default channel settings: the client sends flow-control updates
    // while it reads, as real clients do (see drain_finish_delay).
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::KvSession::NewStub(channel_);
  }
  ~ServerProcess() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  bool WaitReady() {
    for (int i = 0; i < 300; ++i) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(200));
      v1::ServerInfo info;
      if (stub_->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &info).ok()) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  // Exit status, or -1 if the process did not exit within `seconds`.
  int WaitExit(int seconds) {
    for (int i = 0; i < seconds * 20; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  v1::KvSession::Stub& stub() { return *stub_; }

 private:
  int port_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::KvSession::Stub> stub_;
};

// grpc.health.v1.Health/Check through a generic stub: the request (empty
// service name) is zero bytes; a SERVING response is field 1 = 1, i.e. the
// bytes 08 01.
std::string HealthCheck(int port) {
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                     grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::CompletionQueue cq;
  grpc::Slice empty;
  grpc::ByteBuffer request(&empty, 1);
  auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check",
                                    request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  if (!cq.Next(&tag, &ok) || !ok || !status.ok()) return "error";
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return "error";
  std::string out;
  for (const grpc::Slice& sl : slices) {
    out.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return out;
}

TEST(ServerProcessTest, TakenMetricsPortIsAStartupError) {
  // Hold a port so the server cannot bind its metrics endpoint there.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ServerProcess server(1, ntohs(addr.sin_port));
  EXPECT_EQ(server.WaitExit(60), 1);
  close(fd);
}

TEST(ServerProcessTest, AnswersGrpcHealthChecks) {
  ServerProcess server(5);
  ASSERT_TRUE(server.WaitReady());
  EXPECT_EQ(HealthCheck(server.port()), std::string("\x08\x01", 2));
}

// The Qwen models of tests/data (K-quant and Q8_0 matrices, real
// vocabularies) served by the binary: multi-turn chat with full reuse.
class FamilyServerProcessTest : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Families, FamilyServerProcessTest,
                         ::testing::Values("qwen2", "qwen3"));

TEST_P(FamilyServerProcessTest, ChatsMultiTurnWithFullReuse) {
  ServerProcess server(5, 0,
                       std::string(KVSESSION_TEST_DATA_DIR) + "/" + GetParam() +
                           "-tiny.gguf");
  ASSERT_TRUE(server.WaitReady());
  {
    grpc::ClientContext ctx;
    v1::ServerInfo info;
    ASSERT_TRUE(server.stub().GetServerInfo(&ctx, {}, &info).ok());
    EXPECT_THAT(info.model_path(), HasSubstr(GetParam()));
  }
  int32_t held = 0;
  for (int turn = 0; turn < 3; ++turn) {
    v1::ChatRequest r =
        UserTurn("multi", "tell me more, part " + std::to_string(turn), 12);
    TurnOutput o = RunChat(server.stub(), r);
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    EXPECT_FALSE(o.tokens.empty());
    // Every follow-up prefills only its own new tokens.
    EXPECT_EQ(o.summary.cached_tokens(), held) << "turn " << turn;
    EXPECT_EQ(o.summary.prefilled_tokens(),
              o.summary.prompt_tokens() - o.summary.cached_tokens());
    held = o.summary.session_tokens();
  }
}

TEST(ServerProcessTest, ChatClientWorksFromAPipe) {
  ServerProcess server(5);
  ASSERT_TRUE(server.WaitReady());
  const std::string cmd =
      std::string("printf 'hello there\\n/stats\\nand again\\n/quit\\n' | ") +
      KVSESSION_CHAT_BIN + " --addr 127.0.0.1:" + std::to_string(server.port()) +
      " --session piped --max_tokens 8 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << out;
  // Two turns with statistics; the second reuses the first.
  EXPECT_THAT(out, HasSubstr("[piped: reused 0 /"));
  EXPECT_THAT(out, HasSubstr("session piped:"));
  EXPECT_EQ(out.find("[piped: reused 0 /"), out.rfind("[piped: reused 0 /"))
      << "the second turn reused nothing:\n" << out;
}

TEST(ServerProcessTest, SigtermLetsRunningStreamsFinishAndExitsZero) {
  ServerProcess server(/*grace_s=*/20);
  ASSERT_TRUE(server.WaitReady());
  constexpr int kStreams = 8;
  std::vector<grpc::Status> results(kStreams);
  std::vector<int> summaries(kStreams, 0);
  std::atomic<int> started{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      v1::ChatRequest r = UserTurn("drain-" + std::to_string(i), "go", 200);
      r.set_ignore_eos(true);
      grpc::ClientContext ctx;
      auto reader = server.stub().Chat(&ctx, r);
      v1::ChatEvent ev;
      bool first = true;
      while (reader->Read(&ev)) {
        if (first) {
          ++started;
          first = false;
        }
        if (ev.has_summary()) ++summaries[i];
      }
      results[i] = reader->Finish();
    });
  }
  while (started < kStreams) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(kill(server.pid(), SIGTERM), 0);
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    // Within the grace period every stream completes normally.
    EXPECT_TRUE(results[i].ok()) << results[i].error_message();
    EXPECT_EQ(summaries[i], 1);
  }
  EXPECT_EQ(server.WaitExit(30), 0);
}

TEST(ServerProcessTest, SigtermAfterGraceCancelsStreamsCleanly) {
  ServerProcess server(/*grace_s=*/1);
  ASSERT_TRUE(server.WaitReady());
  v1::ChatRequest r = UserTurn("slow", "go", 900);
  r.set_ignore_eos(true);
  r.set_use_cache(false);  // recompute per token: outlives the grace period
  grpc::ClientContext ctx;
  auto reader = server.stub().Chat(&ctx, r);
  v1::ChatEvent ev;
  ASSERT_TRUE(reader->Read(&ev));
  ASSERT_EQ(kill(server.pid(), SIGTERM), 0);
  while (reader->Read(&ev)) {
  }
  const grpc::Status st = reader->Finish();
  EXPECT_THAT(st.error_code(),
              ::testing::AnyOf(grpc::StatusCode::CANCELLED,
                               grpc::StatusCode::UNAVAILABLE))
      << st.error_message();
  EXPECT_EQ(server.WaitExit(30), 0);
}

}  // namespace
}  // namespace kvsession::testing
