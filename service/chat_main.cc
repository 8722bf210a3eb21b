// kvsession-chat: multi-turn chat in the terminal against kvsession-server.
// Each line is a user turn sent in append mode to one session; the answer
// streams as it arrives, followed by a dim line of cache statistics.
// Commands: /new, /session ID, /stats, /quit. Works from a pipe too (the
// statistics then go to stderr).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <random>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "grpcpp/grpcpp.h"
#include "kvsession/v1/kvsession.grpc.pb.h"

ABSL_FLAG(std::string, addr, "localhost:50051", "Server address host:port");
ABSL_FLAG(std::string, session, "", "Session id (default: a new random one)");
ABSL_FLAG(std::string, system, "", "System message for the first turn");
ABSL_FLAG(int32_t, max_tokens, 0, "Tokens per answer; 0 is the server default");
ABSL_FLAG(float, temperature, 0.0f, "Sampling temperature; 0 is greedy");

namespace kvsession {
namespace {

std::string NewSessionId() {
  std::random_device rd;
  return absl::StrFormat("chat-%08x%08x", rd(), rd());
}

class Chat {
 public:
  Chat(std::shared_ptr<grpc::Channel> channel, bool tty)
      : stub_(v1::KvSession::NewStub(channel)), tty_(tty) {}

  void set_session(std::string id) {
    session_ = std::move(id);
    first_turn_ = true;
  }
  const std::string& session() const { return session_; }

  bool Turn(const std::string& text) {
    v1::ChatRequest req;
    req.set_session_id(session_);
    req.set_mode(v1::HISTORY_MODE_APPEND);
    if (first_turn_ && !absl::GetFlag(FLAGS_system).empty()) {
      v1::Message* sys = req.add_messages();
      sys->set_role("system");
      sys->set_content(absl::GetFlag(FLAGS_system));
    }
    v1::Message* m = req.add_messages();
    m->set_role("user");
    m->set_content(text);
    req.set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
    req.mutable_sampling()->set_temperature(absl::GetFlag(FLAGS_temperature));
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-session-id", session_);
    std::unique_ptr<grpc::ClientReader<v1::ChatEvent>> reader =
        stub_->Chat(&ctx, req);
    v1::ChatEvent ev;
    v1::TurnSummary summary;
    bool have_summary = false;
    while (reader->Read(&ev)) {
      if (ev.has_delta()) {
        std::fwrite(ev.delta().text().data(), 1, ev.delta().text().size(),
                    stdout);
        std::fflush(stdout);
      } else if (ev.has_summary()) {
        summary = ev.summary();
        have_summary = true;
      }
    }
    std::fputc('\n', stdout);
    grpc::Status st = reader->Finish();
    if (!st.ok()) {
      std::fprintf(stderr, "error: %s: %s\n",
                   std::to_string(st.error_code()).c_str(),
                   st.error_message().c_str());
      return false;
    }
    first_turn_ = false;
    if (have_summary) {
      const double decode_s =
          summary.total_seconds() - summary.time_to_first_token_seconds();
      const std::string line = absl::StrFormat(
          "[%s: reused %d / prefilled %d of %d prompt tokens, generated %d, "
          "TTFT %.0f ms, %.1f tokens/s]",
          session_, summary.cached_tokens(), summary.prefilled_tokens(),
          summary.prompt_tokens(), summary.generated_tokens(),
          summary.time_to_first_token_seconds() * 1e3,
          decode_s > 0 ? (summary.generated_tokens() - 1) / decode_s : 0.0);
      if (tty_) {
        std::printf("\033[2m%s\033[0m\n", line.c_str());
      } else {
        std::fprintf(stderr, "%s\n", line.c_str());
      }
    }
    return true;
  }

  void Stats() {
    grpc::ClientContext ctx;
    v1::GetSessionRequest req;
    req.set_session_id(session_);
    v1::SessionInfo info;
    grpc::Status st = stub_->GetSession(&ctx, req, &info);
    if (st.ok()) {
      std::printf("session %s: %d tokens in %d blocks (%lld KV bytes), %d turns\n",
                  info.session_id().c_str(), info.tokens(), info.blocks(),
                  static_cast<long long>(info.kv_bytes()), info.turns());
    } else {
      std::printf("session %s: %s\n", session_.c_str(),
                  st.error_message().c_str());
    }
    grpc::ClientContext ctx2;
    v1::ServerInfo server;
    if (stub_->GetServerInfo(&ctx2, v1::GetServerInfoRequest(), &server).ok()) {
      std::printf("server: %s, %d sessions", server.model_name().c_str(),
                  server.sessions());
      for (const v1::TierInfo& t : server.tiers()) {
        std::printf(", %s KV %lld / %lld bytes", t.tier().c_str(),
                    static_cast<long long>(t.used_bytes()),
                    static_cast<long long>(t.capacity_bytes()));
      }
      std::printf("\n");
    }
  }

 private:
  std::unique_ptr<v1::KvSession::Stub> stub_;
  bool tty_;
  std::string session_;
  bool first_turn_ = true;
};

int Run() {
  const bool tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  Chat chat(grpc::CreateChannel(absl::GetFlag(FLAGS_addr),
                                grpc::InsecureChannelCredentials()),
            tty);
  chat.set_session(absl::GetFlag(FLAGS_session).empty()
                       ? NewSessionId()
                       : absl::GetFlag(FLAGS_session));
  if (tty) {
    std::printf("session %s; /new, /session ID, /stats, /quit\n",
                chat.session().c_str());
  }
  std::string line;
  int failures = 0;
  while (true) {
    if (tty) {
      std::printf("> ");
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    if (line == "/quit" || line == "/exit") break;
    if (line == "/new") {
      chat.set_session(NewSessionId());
      std::printf("session %s\n", chat.session().c_str());
      continue;
    }
    if (line.rfind("/session ", 0) == 0) {
      chat.set_session(line.substr(9));
      std::printf("session %s\n", chat.session().c_str());
      continue;
    }
    if (line == "/stats") {
      chat.Stats();
      continue;
    }
    if (!chat.Turn(line)) ++failures;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace kvsession

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Chats with kvsession-server: kvsession-chat --addr host:port "
      "[--session ID]");
  absl::ParseCommandLine(argc, argv);
  return kvsession::Run();
}
