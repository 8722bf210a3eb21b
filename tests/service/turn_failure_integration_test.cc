// The turn contract over a real gRPC client, part 1: a turn that fails or
// is cut short leaves exactly what the contract says (nothing, or what it
// streamed). Every check compares against an independent expectation: a
// control session or control server that ran the same conversation
// without the disturbance.
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

// ---- 1. A turn that fails before streaming leaves the session as before.

TestServerOptions SmallKv() {
  TestServerOptions o;
  o.engine.kv_device_bytes = 40 * BlockBytes();  // 640 tokens
  return o;
}

// A prompt of ~800 tokens: more KV than the server has, within the window.
std::string TooBigForKv(TestServer& s) { return LongMessage(s.bundle(), 800); }

TEST(TurnContractTest, ResourceExhaustedAppendLeavesTheSessionAsBefore) {
  ExpectFailedTurnChangesNothing(
      SmallKv(), "s",
      [](TestServer& s) {
        ASSERT_TRUE(
            RunChat(s.stub(), UserTurn("s", "hello there", 8)).status.ok());
      },
      [](TestServer& s) {
        return Stream(s.stub(), UserTurn("s", TooBigForKv(s), 8));
      },
      Code::RESOURCE_EXHAUSTED,
      [](Stub& stub) { return Stream(stub, UserTurn("s", "and now?", 8)); });
}

TEST(TurnContractTest, ResourceExhaustedFullHistoryLeavesTheSessionAsBefore) {
  // The failed request continues the history, or replaces it from the first
  // message on (then it shares almost no prefix with the history).
  for (bool diverge : {false, true}) {
    SCOPED_TRACE(diverge ? "diverges at once" : "continues the history");
    std::string reply;
    ExpectFailedTurnChangesNothing(
        SmallKv(), "s",
        [&](TestServer& s) {
          const Streamed a =
              Stream(s.stub(), FullTurn("s", {{"user", "hello there"}}, 8));
          ASSERT_TRUE(a.status.ok());
          reply = a.text;
        },
        [&](TestServer& s) {
          if (diverge) {
            return Stream(s.stub(),
                          FullTurn("s", {{"user", TooBigForKv(s)}}, 8));
          }
          return Stream(s.stub(), FullTurn("s",
                                           {{"user", "hello there"},
                                            {"assistant", reply},
                                            {"user", TooBigForKv(s)}},
                                           8));
        },
        Code::RESOURCE_EXHAUSTED,
        [&](Stub& stub) {
          return Stream(stub, FullTurn("s",
                                       {{"user", "hello there"},
                                        {"assistant", reply},
                                        {"user", "and now?"}},
                                       8));
        });
  }
}

TEST(TurnContractTest, ResourceExhaustedCompleteLeavesTheSessionAsBefore) {
  ExpectFailedTurnChangesNothing(
      SmallKv(), "s",
      [](TestServer& s) {
        ASSERT_TRUE(
            RunComplete(s.stub(), CompleteText("s", "once upon a time", 8))
                .status.ok());
      },
      [](TestServer& s) {
        return Stream(s.stub(), CompleteText("s", TooBigForKv(s), 8));
      },
      Code::RESOURCE_EXHAUSTED,
      [](Stub& stub) {
        return Stream(stub, CompleteText("s", "once upon a time there was", 8));
      });
}

TEST(TurnContractTest, ResourceExhaustedOnANewSessionCreatesNothing) {
  for (bool chat : {true, false}) {
    SCOPED_TRACE(chat ? "Chat" : "Complete");
    ExpectFailedTurnChangesNothing(
        SmallKv(), "new", nullptr,
        [chat](TestServer& s) {
          return chat
                     ? Stream(s.stub(), UserTurn("new", TooBigForKv(s), 8))
                     : Stream(s.stub(), CompleteText("new", TooBigForKv(s), 8));
        },
        Code::RESOURCE_EXHAUSTED,
        [chat](Stub& stub) {
          return chat ? Stream(stub, UserTurn("new", "hi", 8))
                      : Stream(stub, CompleteText("new", "hi", 8));
        });
  }
}

// One-token prefill steps: a ~950-token prompt takes far longer (~0.5 s on
// a laptop core) than the deadlines below.
TestServerOptions SlowPrefill() {
  TestServerOptions o;
  o.engine.max_batch_tokens = 1;
  o.engine.max_running = 1;
  return o;
}

TEST(TurnContractTest, DeadlineDuringPrefillLeavesTheSessionAsBefore) {
  for (bool existing : {true, false}) {
    SCOPED_TRACE(existing ? "existing session" : "new session");
    ExpectFailedTurnChangesNothing(
        SlowPrefill(), "s",
        [existing](TestServer& s) {
          if (!existing) return;
          ASSERT_TRUE(
              RunChat(s.stub(), UserTurn("s", "hello there", 8)).status.ok());
        },
        [](TestServer& s) {
          return Stream(s.stub(),
                        UserTurn("s", LongMessage(s.bundle(), 950), 8), -1,
                        std::chrono::milliseconds(40));
        },
        Code::DEADLINE_EXCEEDED,
        [](Stub& stub) { return Stream(stub, UserTurn("s", "and now?", 8)); });
  }
}

TEST(TurnContractTest, CancelBeforeTheFirstDeltaLeavesTheSessionAsBefore) {
  ExpectFailedTurnChangesNothing(
      SlowPrefill(), "s",
      [](TestServer& s) {
        ASSERT_TRUE(
            RunChat(s.stub(), UserTurn("s", "hello there", 8)).status.ok());
      },
      [](TestServer& s) {
        const v1::ChatRequest r =
            UserTurn("s", LongMessage(s.bundle(), 950), 8);
        // Let the turn start prefilling, then cancel well before it ends.
        grpc::ClientContext ctx;
        auto reader = s.stub().Chat(&ctx, r);
        const auto give_up =
            std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (!Get(s.stub(), "s").second.busy() &&
               std::chrono::steady_clock::now() < give_up) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        ctx.TryCancel();
        Streamed out;
        v1::ChatEvent ev;
        while (reader->Read(&ev)) {
          for (int32_t t : ev.delta().token_ids()) out.tokens.push_back(t);
          out.has_summary |= ev.has_summary();
        }
        out.status = reader->Finish();
        return out;
      },
      Code::CANCELLED,
      [](Stub& stub) { return Stream(stub, UserTurn("s", "and now?", 8)); });
}

TEST(TurnContractTest, InvalidInputLeavesTheSessionAsBefore) {
  ExpectFailedTurnChangesNothing(
      TestServerOptions(), "s",
      [](TestServer& s) {
        ASSERT_TRUE(
            RunChat(s.stub(), UserTurn("s", "hello there", 8)).status.ok());
      },
      [](TestServer& s) {
        v1::ChatRequest r = UserTurn("s", "and now?", 8);
        r.mutable_sampling()->set_temperature(-1);
        return Stream(s.stub(), r);
      },
      Code::INVALID_ARGUMENT,
      [](Stub& stub) { return Stream(stub, UserTurn("s", "and now?", 8)); });
}

// ---- 2. A turn cut short after streaming keeps what was streamed.
//
// The client cannot count exactly what the server streamed: after TryCancel
// (or the deadline) gRPC's Read returns false at once, also for deltas that
// had already reached the client, so "kept" may exceed "received" by the
// deltas in flight. Asserted: every received token is kept, what is kept is
// exactly a greedy prefix of the reply (a control turn with max_tokens =
// kept gives the same session and next turn), and the transcript has it.
// Returns kept - received.

int ExpectCutTurnKeepsWhatWasStreamed(
    TestServer& server, const std::string& id, const std::string& text,
    const std::function<Streamed(const v1::ChatRequest&)>& cut_turn,
    Code code) {
  Stub& stub = server.stub();
  // cut: the turn is cut short; probe: the same turn's prompt length;
  // ctl: the same turn with max_tokens = what cut kept.
  const std::string cut = absl::StrCat("cut-", id);
  const std::string probe = absl::StrCat("probe-", id);
  const std::string ctl = absl::StrCat("ctl-", id);
  for (const std::string& session : {cut, probe, ctl}) {
    EXPECT_TRUE(
        RunChat(stub, UserTurn(session, "warm up: " + text, 6)).status.ok());
  }
  const auto before = Get(stub, cut);
  const Streamed s = cut_turn(LongTurn(cut, text));
  EXPECT_EQ(s.status.error_code(), code) << s.status.error_message();
  const auto after = Idle(stub, cut);
  EXPECT_EQ(after.first, Code::OK);
  const int received = static_cast<int>(s.tokens.size());
  if (received == 0) {  // nothing streamed: nothing kept
    ExpectSameState(after.second, before.second, "nothing streamed");
    return 0;
  }
  const int prompt =
      Stream(stub, LongTurn(probe, text, 1)).summary.prompt_tokens();
  const int kept = after.second.tokens() - prompt;
  EXPECT_GE(kept, received) << "every received token stays in the session";
  const Streamed c = Stream(stub, LongTurn(ctl, text, kept));
  EXPECT_TRUE(c.status.ok()) << c.status.error_message();
  EXPECT_TRUE(c.tokens.size() >= s.tokens.size() &&
              std::equal(s.tokens.begin(), s.tokens.end(), c.tokens.begin()))
      << "the received tokens are the greedy ones";
  ExpectSameState(after.second, Idle(stub, ctl).second, "against the control");
  if (after.second.messages_size() == 0) {
    ADD_FAILURE() << "no transcript";
    return kept - received;
  }
  const v1::Message& last = *after.second.messages().rbegin();
  EXPECT_EQ(last.role(), "assistant");
  EXPECT_EQ(last.content().substr(0, s.text.size()), s.text);
  ExpectSameTurn(Stream(stub, UserTurn(cut, "and then?", 6)),
                 Stream(stub, UserTurn(ctl, "and then?", 6)), "next turn");
  return kept - received;
}

// The sessions of one round hold the same tokens: without prefix sharing the
// control's next turn cannot reuse blocks the cut session's just computed.
TestServerOptions NoSharing() {
  TestServerOptions o;
  o.engine.share_prefixes = false;
  return o;
}

TEST(TurnContractTest, CancelAfterStreamingKeepsTheStreamedTokens) {
  TestServer server(NoSharing());
  std::string extra;
  for (int round = 0; round < 12; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const int k = 1 + round % 6;
    const int more = ExpectCutTurnKeepsWhatWasStreamed(
        server, std::to_string(round),
        absl::StrCat("tell me long story ", round),
        [&](const v1::ChatRequest& r) { return Stream(server.stub(), r, k); },
        Code::CANCELLED);
    absl::StrAppend(&extra, " ", more);
  }
  std::printf("cancel: tokens kept beyond those received, per round:%s\n",
              extra.c_str());
}

TEST(TurnContractTest, DeadlineAfterStreamingKeepsTheStreamedTokens) {
  TestServer server(NoSharing());
  std::string extra;
  for (int round = 0; round < 6; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    // 900 tokens take far longer than these deadlines (~1 ms a token).
    const std::chrono::milliseconds deadline(30 + 20 * round);
    const int more = ExpectCutTurnKeepsWhatWasStreamed(
        server, std::to_string(round), absl::StrCat("go on forever ", round),
        [&](const v1::ChatRequest& r) {
          return Stream(server.stub(), r, -1, deadline);
        },
        Code::DEADLINE_EXCEEDED);
    absl::StrAppend(&extra, " ", more);
  }
  std::printf("deadline: tokens kept beyond those received, per round:%s\n",
              extra.c_str());
}

}  // namespace
}  // namespace kvsession::testing::turn
