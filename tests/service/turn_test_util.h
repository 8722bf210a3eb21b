// Helpers of the turn-contract tests: a client's view of a streamed turn,
// session state over gRPC, and the failed-turn comparison against a control
// server.
#ifndef KVSESSION_TESTS_SERVICE_TURN_TEST_UTIL_H_
#define KVSESSION_TESTS_SERVICE_TURN_TEST_UTIL_H_

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/service/test_server.h"

namespace kvsession::testing::turn {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;
using Code = grpc::StatusCode;
using Transcript = std::vector<std::pair<std::string, std::string>>;
using Stub = v1::KvSession::Stub;

constexpr int kContext = 1024;  // the tiny model's context window

// What a client saw of one streamed call.
struct Streamed {
  grpc::Status status;
  std::vector<int32_t> tokens;  // every token id received, drained ones too
  std::string text;
  int deltas = 0;
  bool has_summary = false;
  v1::TurnSummary summary;
};

inline std::unique_ptr<grpc::ClientReader<v1::ChatEvent>> Start(
    Stub& stub, grpc::ClientContext* ctx, const v1::ChatRequest& r) {
  return stub.Chat(ctx, r);
}
inline std::unique_ptr<grpc::ClientReader<v1::ChatEvent>> Start(
    Stub& stub, grpc::ClientContext* ctx, const v1::CompleteRequest& r) {
  return stub.Complete(ctx, r);
}

// Runs a turn. cancel_after >= 0: TryCancel after that many deltas (0:
// before reading anything), then drain, so that every delta the client
// still gets counts (in practice gRPC hands out none after TryCancel).
// deadline > 0: the call's deadline.
template <typename Request>
inline Streamed Stream(Stub& stub, const Request& request,
                       int cancel_after = -1,
                       std::chrono::milliseconds deadline = {}) {
  grpc::ClientContext ctx;
  ctx.set_deadline(
      std::chrono::system_clock::now() +
      (deadline.count() > 0 ? deadline : std::chrono::milliseconds(120000)));
  auto reader = Start(stub, &ctx, request);
  Streamed out;
  v1::ChatEvent ev;
  bool cancelled = false;
  while (true) {
    if (!cancelled && out.deltas == cancel_after) {
      ctx.TryCancel();
      cancelled = true;
    }
    if (!reader->Read(&ev)) break;
    if (ev.has_delta()) {
      ++out.deltas;
      out.text += ev.delta().text();
      out.tokens.insert(out.tokens.end(), ev.delta().token_ids().begin(),
                        ev.delta().token_ids().end());
    } else if (ev.has_summary()) {
      out.has_summary = true;
      out.summary = ev.summary();
    }
  }
  out.status = reader->Finish();
  return out;
}

// GetSession over gRPC; the status code and the info.
inline std::pair<Code, v1::SessionInfo> Get(Stub& stub, const std::string& id) {
  grpc::ClientContext ctx;
  v1::GetSessionRequest req;
  req.set_session_id(id);
  v1::SessionInfo info;
  const grpc::Status st = stub.GetSession(&ctx, req, &info);
  return {st.error_code(), info};
}

// Polls GetSession until the session is gone or idle: the engine has ended
// its last turn (a cancel reaches it a step or two after the client sent it).
inline std::pair<Code, v1::SessionInfo> Idle(Stub& stub,
                                             const std::string& id) {
  const auto give_up =
      std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (true) {
    auto got = Get(stub, id);
    if (got.first != Code::OK || !got.second.busy()) return got;
    if (std::chrono::steady_clock::now() > give_up) {
      ADD_FAILURE() << "session " << id << " still busy after 10 s";
      return got;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

inline Transcript MessagesOf(const v1::SessionInfo& info) {
  Transcript t;
  for (const v1::Message& m : info.messages()) {
    t.emplace_back(m.role(), m.content());
  }
  return t;
}

inline void ExpectSameState(const v1::SessionInfo& got,
                            const v1::SessionInfo& want,
                            const std::string& what) {
  EXPECT_EQ(got.tokens(), want.tokens()) << what;
  EXPECT_EQ(got.turns(), want.turns()) << what;
  EXPECT_EQ(MessagesOf(got), MessagesOf(want)) << what;
  EXPECT_FALSE(got.busy()) << what;
}

// The same turn on two identical histories gives the same result.
inline void ExpectSameTurn(const Streamed& got, const Streamed& want,
                           const std::string& what) {
  ASSERT_TRUE(got.status.ok()) << what << ": " << got.status.error_message();
  ASSERT_TRUE(want.status.ok()) << what << ": " << want.status.error_message();
  EXPECT_EQ(got.tokens, want.tokens) << what;
  EXPECT_EQ(got.summary.prompt_tokens(), want.summary.prompt_tokens()) << what;
  EXPECT_EQ(got.summary.cached_tokens(), want.summary.cached_tokens()) << what;
  EXPECT_EQ(got.summary.session_tokens(), want.summary.session_tokens())
      << what;
}

inline std::vector<std::string> ListIds(Stub& stub) {
  grpc::ClientContext ctx;
  v1::ListSessionsRequest req;
  req.set_page_size(1000);
  v1::ListSessionsResponse resp;
  EXPECT_TRUE(stub.ListSessions(&ctx, req, &resp).ok());
  std::vector<std::string> ids;
  for (const v1::SessionInfo& s : resp.sessions()) {
    ids.push_back(s.session_id());
  }
  return ids;
}

inline int ServerSessions(Stub& stub) {
  grpc::ClientContext ctx;
  v1::ServerInfo info;
  EXPECT_TRUE(stub.GetServerInfo(&ctx, v1::GetServerInfoRequest(), &info).ok());
  return info.sessions();
}

// Varied words whose first-turn chat rendering has at least `tokens` tokens
// (the tiny vocab has few merges: about one token per character).
inline std::string LongMessage(const runtime::ModelBundle& bundle, int tokens) {
  static const char* kWords[] = {"amber",  "river",   "quartz", "lantern",
                                 "mosaic", "thistle", "orbit",  "velvet",
                                 "canyon", "ember",   "falcon", "glacier"};
  std::string text;
  uint32_t x = 1;
  while (true) {
    for (int i = 0; i < 8; ++i) {
      x = x * 1103515245u + 12345u;
      text += kWords[(x >> 16) % 12];
      text += ' ';
    }
    const std::vector<runtime::ChatMessage> m = {{"user", text}};
    if (static_cast<int>(bundle.EncodeChat(m, true, true)->size()) >= tokens) {
      return text;
    }
  }
}

inline int FirstTurnTokens(const runtime::ModelBundle& bundle,
                           const std::string& text) {
  const std::vector<runtime::ChatMessage> m = {{"user", text}};
  return static_cast<int>(bundle.EncodeChat(m, true, true)->size());
}

inline v1::ChatRequest FullTurn(const std::string& id,
                                const Transcript& messages, int max_tokens) {
  v1::ChatRequest r;
  r.set_session_id(id);
  r.set_mode(v1::HISTORY_MODE_FULL);
  r.set_max_tokens(max_tokens);
  for (const auto& [role, content] : messages) {
    v1::Message* m = r.add_messages();
    m->set_role(role);
    m->set_content(content);
  }
  return r;
}

inline v1::CompleteRequest CompleteText(const std::string& id,
                                        const std::string& text,
                                        int max_tokens) {
  v1::CompleteRequest r;
  r.set_session_id(id);
  r.set_text(text);
  r.set_max_tokens(max_tokens);
  return r;
}

inline v1::ChatRequest LongTurn(const std::string& id, const std::string& text,
                                int max_tokens = 900) {
  v1::ChatRequest r = UserTurn(id, text, max_tokens);
  r.set_ignore_eos(true);
  return r;
}

inline bool Delete(Stub& stub, const std::string& id,
                   grpc::Status* status = nullptr) {
  grpc::ClientContext ctx;
  v1::DeleteSessionRequest req;
  req.set_session_id(id);
  v1::DeleteSessionResponse resp;
  const grpc::Status st = stub.DeleteSession(&ctx, req, &resp);
  if (status != nullptr) *status = st;
  return st.ok();
}

// Bytes of one KV block of the tiny model (a probe server's).
inline int64_t BlockBytes() {
  static const int64_t bytes = [] {
    const TestServerOptions options;
    TestServer probe(options);
    return probe.engine().kv_block_bytes();
  }();
  return bytes;
}

// A failed turn changes nothing: `setup` runs on a server and a control
// server, `fail` only on the first (it must end with `code` and nothing
// streamed); then session `id` is the same on both (or NOT_FOUND on both)
// and `next` gives the same result on both.
inline void ExpectFailedTurnChangesNothing(
    const TestServerOptions& options, const std::string& id,
    const std::function<void(TestServer&)>& setup,
    const std::function<Streamed(TestServer&)>& fail, Code code,
    const std::function<Streamed(Stub&)>& next) {
  TestServer server(options);
  TestServer control(options);
  if (setup) {
    setup(server);
    setup(control);
  }
  const auto before = Get(server.stub(), id);
  const Streamed f = fail(server);
  EXPECT_EQ(f.status.error_code(), code) << f.status.error_message();
  ASSERT_TRUE(f.tokens.empty())
      << "the turn meant to fail streamed " << f.tokens.size()
      << " tokens: the setup no longer provokes a failure before streaming";
  EXPECT_FALSE(f.has_summary);
  const auto after = Idle(server.stub(), id);
  const auto want = Get(control.stub(), id);
  ASSERT_EQ(after.first, before.first);
  ASSERT_EQ(want.first, before.first);
  if (before.first == Code::OK) {
    ExpectSameState(after.second, before.second, "against before the turn");
    ExpectSameState(after.second, want.second, "against the control");
  }
  const Streamed got = next(server.stub());
  const Streamed expected = next(control.stub());
  ExpectSameTurn(got, expected, "next turn");
  ExpectSameState(Idle(server.stub(), id).second,
                  Get(control.stub(), id).second, "after the next turn");
}

}  // namespace kvsession::testing::turn

#endif  // KVSESSION_TESTS_SERVICE_TURN_TEST_UTIL_H_
