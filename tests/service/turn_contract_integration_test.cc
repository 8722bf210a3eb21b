// The turn contract over a real gRPC client, part 2: stop then ask again,
// transcripts, one-off turns, use_cache=false, the context window, idle
// limits and stop strings, each against a control session or server.
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
#include "tests/service/turn_test_util.h"

namespace kvsession::testing::turn {
namespace {

// ---- 3. Stop, then ask again.

TEST(TurnContractTest, StopThenAskAgainNeverAborts) {
  const TestServerOptions options;
  TestServer server(options);
  Stub& stub = server.stub();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) {
    SCOPED_TRACE("iteration " + std::to_string(i));
    const Streamed cut = Stream(
        stub, LongTurn("s", "story " + std::to_string(i), 800), 1 + i % 3);
    ASSERT_EQ(cut.status.error_code(), Code::CANCELLED)
        << cut.status.error_message();
    if (i % 2 == 1) {
      // Deleting right after a cancel waits for the turn to unwind. It also
      // keeps the history short enough for the next 800-token turn.
      grpc::Status st;
      EXPECT_TRUE(Delete(stub, "s", &st))
          << st.error_code() << " " << st.error_message();
    }
    const TurnOutput next =
        RunChat(stub, UserTurn("s", "again " + std::to_string(i), 4));
    ASSERT_TRUE(next.status.ok())
        << next.status.error_code() << " " << next.status.error_message();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
}

TEST(TurnContractTest, AConcurrentLiveTurnIsStillAborted) {
  TestServerOptions o;
  o.engine.busy_grace = absl::Milliseconds(20);  // the first turn outlives it
  TestServer server(o);
  auto stub = server.NewStub();
  grpc::ClientContext ctx;
  auto reader = stub->Chat(&ctx, LongTurn("busy", "long answer please"));
  v1::ChatEvent ev;
  ASSERT_TRUE(reader->Read(&ev));
  const Streamed second = Stream(server.stub(), UserTurn("busy", "me too", 4));
  EXPECT_EQ(second.status.error_code(), Code::ABORTED);
  EXPECT_THAT(second.status.error_message(), HasSubstr("busy"));
  EXPECT_TRUE(reader->Read(&ev)) << "the first turn is still streaming";
  ctx.TryCancel();
  while (reader->Read(&ev)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), Code::CANCELLED);
}

// ---- 4. The transcript.

TEST(TurnContractTest, TranscriptHoldsTheMessagesAndTheStreamedReplies) {
  const TestServerOptions options;
  TestServer server(options);
  Stub& stub = server.stub();
  const Streamed a = Stream(stub, UserTurn("append", "hi", 8));
  const Streamed b = Stream(stub, UserTurn("append", "how are you", 8));
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(MessagesOf(Get(stub, "append").second),
            (Transcript{{"user", "hi"},
                        {"assistant", a.text},
                        {"user", "how are you"},
                        {"assistant", b.text}}));

  const Transcript history = {{"system", "be brief"},
                              {"user", "hi"},
                              {"assistant", "hello!"},
                              {"user", "how are you"}};
  const Streamed f = Stream(stub, FullTurn("full", history, 8));
  ASSERT_TRUE(f.status.ok());
  Transcript want = history;
  want.emplace_back("assistant", f.text);
  EXPECT_EQ(MessagesOf(Get(stub, "full").second), want);

  // Raw token history has no transcript, also where a chat had one.
  ASSERT_TRUE(RunComplete(stub, CompleteText("raw", "once upon a time", 8))
                  .status.ok());
  ASSERT_TRUE(RunComplete(stub, CompleteText("append", "once upon a time", 8))
                  .status.ok());
  for (const char* id : {"raw", "append"}) {
    const auto got = Get(stub, id);
    ASSERT_EQ(got.first, Code::OK) << id;
    EXPECT_EQ(got.second.messages_size(), 0) << id;
  }
}

// ---- 5. One-off turns are not sessions.

TEST(TurnContractTest, OneOffTurnsAreNotListedOrCounted) {
  const TestServerOptions options;
  TestServer server(options);
  Stub& stub = server.stub();
  ASSERT_TRUE(RunChat(stub, UserTurn("real", "hello", 4)).status.ok());
  v1::CompleteRequest one_off = CompleteText("", "a one-off", 900);
  one_off.set_ignore_eos(true);
  v1::ChatRequest no_cache = LongTurn("real", "no cache");
  no_cache.set_use_cache(false);
  for (int which = 0; which < 2; ++which) {
    SCOPED_TRACE(which == 0 ? "one-off Complete" : "use_cache=false Chat");
    grpc::ClientContext ctx;
    auto reader =
        which == 0 ? stub.Complete(&ctx, one_off) : stub.Chat(&ctx, no_cache);
    v1::ChatEvent ev;
    ASSERT_TRUE(reader->Read(&ev));  // it is running
    EXPECT_EQ(ListIds(stub), std::vector<std::string>{"real"});
    EXPECT_EQ(ServerSessions(stub), 1);
    ctx.TryCancel();
    while (reader->Read(&ev)) {
    }
    reader->Finish();
  }
}

TEST(TurnContractTest, OneOffTurnsDoNotCountAgainstMaxSessions) {
  TestServerOptions o;
  o.engine.max_sessions = 2;
  TestServer server(o);
  Stub& stub = server.stub();
  for (const char* id : {"a", "b"}) {
    ASSERT_TRUE(RunChat(stub, UserTurn(id, "hello", 4)).status.ok());
  }
  const TurnOutput one_off =
      RunComplete(stub, CompleteText("", "a one-off", 4));
  EXPECT_TRUE(one_off.status.ok()) << one_off.status.error_message();
  v1::ChatRequest no_cache = UserTurn("a", "no cache", 4);
  no_cache.set_use_cache(false);
  const TurnOutput nc = RunChat(stub, no_cache);
  EXPECT_TRUE(nc.status.ok()) << nc.status.error_message();
  // A third real session is over the limit; its error names no internals.
  const TurnOutput third = RunChat(stub, UserTurn("c", "hello", 4));
  EXPECT_EQ(third.status.error_code(), Code::RESOURCE_EXHAUSTED);
  for (const TurnOutput* t : {&one_off, &nc, &third}) {
    EXPECT_THAT(t->status.error_message(), Not(HasSubstr("\x01")));
    EXPECT_THAT(t->status.error_message(), Not(HasSubstr("turn-")));
  }
  EXPECT_EQ(ListIds(stub), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ServerSessions(stub), 2);
}

// ---- 6. use_cache=false reads the pre-turn history and changes nothing.

TEST(TurnContractTest, NoCacheTurnOnABusySessionIsAborted) {
  TestServerOptions o;
  o.engine.busy_grace = absl::Milliseconds(20);
  TestServer server(o);
  auto stub = server.NewStub();
  grpc::ClientContext ctx;
  auto reader = stub->Chat(&ctx, LongTurn("busy", "long answer please"));
  v1::ChatEvent ev;
  ASSERT_TRUE(reader->Read(&ev));
  v1::ChatRequest nc = UserTurn("busy", "peek", 4);
  nc.set_use_cache(false);
  const Streamed got = Stream(server.stub(), nc);
  EXPECT_EQ(got.status.error_code(), Code::ABORTED)
      << got.status.error_message();
  EXPECT_TRUE(got.tokens.empty());
  ctx.TryCancel();
  while (reader->Read(&ev)) {
  }
  reader->Finish();
}

TEST(TurnContractTest, NoCacheTurnReadsTheHistoryAndChangesNothing) {
  const TestServerOptions options;
  TestServer server(options);
  Stub& stub = server.stub();
  ASSERT_TRUE(RunChat(stub, UserTurn("s", "hello there", 6)).status.ok());
  ASSERT_TRUE(RunChat(stub, UserTurn("s", "tell me more", 6)).status.ok());
  const auto before = Get(stub, "s");
  v1::ChatRequest nc = UserTurn("s", "and now?", 8);
  nc.set_use_cache(false);
  const Streamed baseline = Stream(stub, nc);
  ASSERT_TRUE(baseline.status.ok()) << baseline.status.error_message();
  ExpectSameState(Get(stub, "s").second, before.second,
                  "after use_cache=false");
  // The normal turn sees the same prompt and (exact decoding) the same reply.
  const Streamed normal = Stream(stub, UserTurn("s", "and now?", 8));
  ASSERT_TRUE(normal.status.ok());
  EXPECT_EQ(baseline.summary.prompt_tokens(), normal.summary.prompt_tokens());
  EXPECT_EQ(normal.summary.cached_tokens(), before.second.tokens());
  EXPECT_EQ(baseline.tokens, normal.tokens);
}

// ---- 7. The context window.

TEST(TurnContractTest, ExplicitMaxTokensPastTheWindowIsOutOfRange) {
  const TestServerOptions options;
  TestServer server(options);
  Stub& stub = server.stub();
  const std::string text = LongMessage(server.bundle(), 900);
  const int prompt = FirstTurnTokens(server.bundle(), text);
  ASSERT_LT(prompt, kContext);
  const Streamed over =
      Stream(stub, LongTurn("new", text, kContext - prompt + 1));
  EXPECT_EQ(over.status.error_code(), Code::OUT_OF_RANGE);
  EXPECT_THAT(over.status.error_message(), HasSubstr("max_tokens"));
  EXPECT_EQ(Idle(stub, "new").first, Code::NOT_FOUND);

  // On an existing session: its history alone plus max_tokens fills the
  // window, so any prompt overflows it.
  ASSERT_TRUE(RunChat(stub, UserTurn("old", "hello there", 6)).status.ok());
  const auto before = Get(stub, "old");
  const Streamed over2 =
      Stream(stub, UserTurn("old", "more", kContext - before.second.tokens()));
  EXPECT_EQ(over2.status.error_code(), Code::OUT_OF_RANGE);
  EXPECT_THAT(over2.status.error_message(), HasSubstr("max_tokens"));
  ExpectSameState(Idle(stub, "old").second, before.second,
                  "after OUT_OF_RANGE");

  // Exactly the window is fine.
  const Streamed fits = Stream(stub, LongTurn("fits", text, kContext - prompt));
  ASSERT_TRUE(fits.status.ok()) << fits.status.error_message();
  EXPECT_EQ(fits.summary.prompt_tokens(), prompt);
  EXPECT_EQ(fits.summary.generated_tokens(), kContext - prompt);
  EXPECT_THAT(fits.summary.finish_reason(),
              AnyOf(v1::FINISH_REASON_LENGTH, v1::FINISH_REASON_CONTEXT));
}

TEST(TurnContractTest, DefaultMaxTokensIsCappedByTheWindow) {
  const TestServerOptions options;
  TestServer server(options);
  Stub& stub = server.stub();
  // Leaves fewer tokens of room than the default max_tokens (256).
  const std::string text = LongMessage(server.bundle(), 900);
  const int room = kContext - FirstTurnTokens(server.bundle(), text);
  ASSERT_LT(room, 256);
  const Streamed filled = Stream(stub, LongTurn("filled", text, 0));
  ASSERT_TRUE(filled.status.ok()) << filled.status.error_message();
  EXPECT_EQ(filled.summary.finish_reason(), v1::FINISH_REASON_CONTEXT);
  EXPECT_EQ(static_cast<int>(filled.tokens.size()), room);
  EXPECT_EQ(Get(stub, "filled").second.tokens(), kContext);

  const Streamed eos = Stream(stub, UserTurn("eos", text, 0));
  ASSERT_TRUE(eos.status.ok()) << eos.status.error_message();
  EXPECT_LE(static_cast<int>(eos.tokens.size()), room);
  EXPECT_THAT(eos.summary.finish_reason(),
              AnyOf(v1::FINISH_REASON_STOP, v1::FINISH_REASON_LENGTH,
                    v1::FINISH_REASON_CONTEXT));
}

// ---- 8. Idle TTL.

TEST(TurnContractTest, IdleSessionsExpireWithoutAnotherTurn) {
  TestServerOptions o;
  o.engine.idle_ttl = absl::Milliseconds(300);
  TestServer server(o);
  Stub& stub = server.stub();
  ASSERT_TRUE(RunChat(stub, UserTurn("ttl", "hello", 4)).status.ok());
  ASSERT_EQ(Get(stub, "ttl").first, Code::OK);
  // The contract is about time: twice the TTL with no traffic at all.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_EQ(Get(stub, "ttl").first, Code::NOT_FOUND);
  EXPECT_TRUE(ListIds(stub).empty());
  EXPECT_EQ(ServerSessions(stub), 0);
}

// ---- 9. Stop strings.

// Two printable ASCII characters that first occur in `text` at byte `from`
// or later (so that the reply before them is not empty); empty if none do.
std::string StopStringIn(const std::string& text, size_t from) {
  auto printable = [](char c) { return c > ' ' && c < 127; };
  for (size_t i = from; i + 2 <= text.size(); ++i) {
    const std::string s = text.substr(i, 2);
    if (printable(s[0]) && printable(s[1]) && text.find(s) == i) return s;
  }
  return "";
}

TEST(TurnContractTest, StopStringKeepsOnlyTheStreamedTokens) {
  const TestServerOptions options;
  TestServer server(options);
  Stub& stub = server.stub();
  // Greedy, but the penalty keeps the tiny model from repeating one token:
  // a varied reply to cut.
  auto request = [](const std::string& id) {
    v1::ChatRequest r = LongTurn(id, "write a poem", 40);
    r.mutable_sampling()->set_repetition_penalty(2);
    return r;
  };
  const Streamed control = Stream(stub, request("control"));
  ASSERT_TRUE(control.status.ok());
  int checked = 0;
  for (size_t from : {6u, 16u}) {
    const std::string stop = StopStringIn(control.text, from);
    if (stop.empty()) continue;
    SCOPED_TRACE("stop \"" + stop + "\"");
    const std::string id = "stop-" + std::to_string(from);
    v1::ChatRequest r = request(id);
    r.add_stop(stop);
    const Streamed s = Stream(stub, r);
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    EXPECT_EQ(s.summary.finish_reason(), v1::FINISH_REASON_STOP);
    EXPECT_EQ(s.text, control.text.substr(0, control.text.find(stop)));
    const int received = static_cast<int>(s.tokens.size());
    ASSERT_LE(received, static_cast<int>(control.tokens.size()));
    EXPECT_TRUE(
        std::equal(s.tokens.begin(), s.tokens.end(), control.tokens.begin()))
        << "the streamed tokens are the control's";
    const auto info = Get(stub, id);
    EXPECT_EQ(info.second.tokens(), s.summary.prompt_tokens() + received);
    EXPECT_EQ(s.summary.generated_tokens(), received);
    EXPECT_EQ(s.summary.session_tokens(), info.second.tokens());
    ASSERT_GT(info.second.messages_size(), 0);
    EXPECT_EQ(info.second.messages().rbegin()->content(), s.text);
    // The next turn continues from exactly those tokens.
    const Streamed next = Stream(stub, UserTurn(id, "again", 4));
    ASSERT_TRUE(next.status.ok());
    EXPECT_EQ(next.summary.cached_tokens(), info.second.tokens());
    ++checked;
  }
  EXPECT_GT(checked, 0) << "no stop string found in the control reply";
}

}  // namespace
}  // namespace kvsession::testing::turn
