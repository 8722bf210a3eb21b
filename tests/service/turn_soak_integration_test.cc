// A soak of the turn contract: 64 concurrent client streams with random
// cancels and deadlines. Every call ends with an expected status, every
// session stays consistent, and the in-process server's memory stays flat.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/service/test_server.h"
#include "tests/service/turn_test_util.h"

namespace kvsession::testing::turn {
namespace {

using ::testing::Eq;

constexpr int kThreads = 64;
// The last kSharedThreads threads run two to a session, so that their turns
// collide (ABORTED is allowed for them only).
constexpr int kSharedThreads = 8;
// ASan's quarantine holds freed memory (RSS says nothing of leaks there:
// LeakSanitizer checks those) and slows every call several times, so the
// sanitizer build runs fewer rounds and skips the RSS bound.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kRounds = 8;
constexpr bool kCheckRss = false;
#else
constexpr int kRounds = 40;
constexpr bool kCheckRss = true;
#endif
// A session past this many tokens is deleted before its next turn, so that
// turns always fit the 1024-token window.
constexpr int kRestartTokens = 600;
constexpr int64_t kMaxRssGrowth = 64ll << 20;

bool Shared(int thread) { return thread >= kThreads - kSharedThreads; }
std::string SessionOf(int thread) {
  return Shared(thread)
             ? "shared-" +
                   std::to_string((thread - (kThreads - kSharedThreads)) / 2)
             : "soak-" + std::to_string(thread);
}

int64_t RssBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  ADD_FAILURE() << "no VmRSS in /proc/self/status";
  return 0;
}

struct Call {
  grpc::Status status;
  int received = 0;  // token ids received, drained ones included
  bool has_summary = false;
  v1::TurnSummary summary;
};

// One Chat turn; cancel_after >= 0 cancels after that many deltas.
Call Run(Stub& stub, const v1::ChatRequest& request, int cancel_after,
         std::chrono::milliseconds deadline) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  auto reader = stub.Chat(&ctx, request);
  Call out;
  int deltas = 0;
  bool cancelled = false;
  v1::ChatEvent ev;
  while (true) {
    if (!cancelled && deltas == cancel_after) {
      ctx.TryCancel();
      cancelled = true;
    }
    if (!reader->Read(&ev)) break;
    if (ev.has_delta()) {
      ++deltas;
      out.received += ev.delta().token_ids_size();
    } else if (ev.has_summary()) {
      out.has_summary = true;
      out.summary = ev.summary();
    }
  }
  out.status = reader->Finish();
  return out;
}

// One client thread: its own channel, session and random sequence.
class Client {
 public:
  Client(TestServer& server, int thread)
      : stub_(server.NewStub()),
        thread_(thread),
        id_(SessionOf(thread)),
        rng_(1234 + thread) {}

  void Round(int round) {
    SCOPED_TRACE("thread " + std::to_string(thread_) + " round " +
                 std::to_string(round) + " session " + id_);
    Restart();
    v1::ChatRequest r =
        UserTurn(id_, absl::StrCat("t", thread_, "r", round),
                 // Shared sessions take twice the turns: shorter ones.
                 Shared(thread_) ? 2 + rng_() % 6 : 4 + rng_() % 20);
    int cancel_after = -1;
    auto deadline = std::chrono::milliseconds(60000);
    bool no_cache = false;
    switch (rng_() % 5) {
      case 0:
        break;  // runs to the end
      case 1:
        cancel_after = rng_() % 6;
        r.set_ignore_eos(true);
        break;
      case 2:
        deadline = std::chrono::milliseconds(5 + rng_() % 196);
        r.set_ignore_eos(true);
        break;
      case 3:
        r.set_ignore_eos(true);
        break;
      case 4:
        no_cache = true;
        r.set_use_cache(false);
        if (rng_() % 2 == 0) cancel_after = rng_() % 3;
        break;
    }
    const Call c = Run(*stub_, r, cancel_after, deadline);
    const Code code = c.status.error_code();
    if (Shared(thread_)) {
      EXPECT_THAT(code, AnyOf(Eq(Code::OK), Eq(Code::CANCELLED),
                              Eq(Code::DEADLINE_EXCEEDED), Eq(Code::ABORTED)))
          << c.status.error_message();
      return;
    }
    EXPECT_THAT(code, AnyOf(Eq(Code::OK), Eq(Code::CANCELLED),
                            Eq(Code::DEADLINE_EXCEEDED)))
        << c.status.error_message();
    if (no_cache) {  // the baseline never changes the session
      const auto after = Idle(*stub_, id_);
      EXPECT_EQ(after.first == Code::OK ? after.second.tokens() : 0,
                known_tokens_);
      return;
    }
    if (code == Code::OK) {
      ASSERT_TRUE(c.has_summary);
      const v1::TurnSummary& s = c.summary;
      EXPECT_EQ(s.generated_tokens(), c.received);
      EXPECT_EQ(s.session_tokens(), s.prompt_tokens() + s.generated_tokens());
      // The whole history is reused (nothing is evicted at this size).
      if (known_tokens_ > 0) {
        EXPECT_EQ(s.cached_tokens(), known_tokens_);
      }
      known_tokens_ = s.session_tokens();
      return;
    }
    const auto after = Idle(*stub_, id_);
    const int tokens = after.first == Code::OK ? after.second.tokens() : 0;
    if (c.received == 0) {
      // Nothing reached this client; the server may still have sent deltas
      // that gRPC dropped on the client after the cancel (then the turn is
      // kept with them), but it never keeps part of a turn it did not send.
      EXPECT_GE(tokens, known_tokens_);
    } else {
      EXPECT_GT(tokens, known_tokens_ + c.received);
    }
    known_tokens_ = tokens;
  }

  // Deletes the session when it nears the end of the window. A shared one
  // may be busy with the other thread's turn.
  void Restart() {
    const auto info = Get(*stub_, id_);
    if (info.first != Code::OK || info.second.tokens() < kRestartTokens) return;
    grpc::ClientContext ctx;
    v1::DeleteSessionRequest req;
    req.set_session_id(id_);
    v1::DeleteSessionResponse resp;
    const grpc::Status st = stub_->DeleteSession(&ctx, req, &resp);
    if (Shared(thread_)) {
      EXPECT_THAT(st.error_code(), AnyOf(Eq(Code::OK), Eq(Code::NOT_FOUND),
                                         Eq(Code::FAILED_PRECONDITION)))
          << st.error_message();
    } else {
      EXPECT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
      known_tokens_ = 0;
    }
  }

  // After the soak: idle, and the next turn continues the whole history.
  void Check() {
    SCOPED_TRACE("thread " + std::to_string(thread_) + " session " + id_);
    const auto before = Idle(*stub_, id_);
    ASSERT_THAT(before.first, AnyOf(Eq(Code::OK), Eq(Code::NOT_FOUND)));
    EXPECT_FALSE(before.second.busy());
    const int tokens = before.first == Code::OK ? before.second.tokens() : 0;
    const Call c = Run(*stub_, UserTurn(id_, "last", 4), -1,
                       std::chrono::milliseconds(60000));
    ASSERT_TRUE(c.status.ok())
        << c.status.error_code() << " " << c.status.error_message();
    if (tokens > 0) {
      EXPECT_EQ(c.summary.cached_tokens(), tokens);
    }
    const auto after = Get(*stub_, id_);
    ASSERT_EQ(after.first, Code::OK);
    EXPECT_EQ(after.second.tokens(), c.summary.session_tokens());
    EXPECT_FALSE(after.second.busy());
    // Each kept turn added its user message and the reply.
    EXPECT_EQ(after.second.messages_size(), 2 * after.second.turns());
  }

 private:
  std::unique_ptr<Stub> stub_;
  const int thread_;
  const std::string id_;
  std::mt19937 rng_;
  int known_tokens_ = 0;  // the session's tokens (non-shared sessions)
};

// Runs rounds [from, to) on every client, one thread each.
void RunRounds(std::vector<std::unique_ptr<Client>>& clients, int from,
               int to) {
  std::vector<std::thread> threads;
  for (auto& c : clients) {
    threads.emplace_back([&c, from, to] {
      for (int round = from; round < to; ++round) c->Round(round);
    });
  }
  for (auto& t : threads) t.join();
}

TEST(TurnSoakTest, ConcurrentCancelsAndDeadlinesKeepSessionsConsistent) {
  const TestServerOptions options;
  TestServer server(options);
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kThreads; ++i) {
    clients.push_back(std::make_unique<Client>(server, i));
  }
  const auto start = std::chrono::steady_clock::now();
  RunRounds(clients, 0, 1);
  const int64_t rss_first = RssBytes();
  RunRounds(clients, 1, kRounds);
  const int64_t rss_end = RssBytes();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  std::printf(
      "soak: %d threads x %d rounds in %.1f s; RSS after round 1 "
      "%.1f MiB, at the end %.1f MiB\n",
      kThreads, kRounds, seconds, rss_first / 1048576.0, rss_end / 1048576.0);
  if (kCheckRss) EXPECT_LT(rss_end - rss_first, kMaxRssGrowth);
  for (auto& c : clients) c->Check();
}

}  // namespace
}  // namespace kvsession::testing::turn
