// Memory tiers through the gRPC service on the tiny test model: a device
// tier that holds a quarter of the sessions, with host swap, with drop and
// recompute, with pinning and with a shared system prompt. Every turn must
// equal the turn of a server with room for everything, token for token;
// the engine checks the store's invariants after every step.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/runtime/tiny_model.h"
#include "tests/service/test_server.h"

namespace kvsession::testing {
namespace {

constexpr int kBlockSize = 16;
constexpr int kSessions = 8;  // 4x what the device holds
constexpr int kRounds = 4;
constexpr int kMaxTokens = 8;

struct Turn {
  std::vector<int32_t> tokens;
  v1::TurnSummary summary;
};
using Transcript = std::map<std::string, std::vector<Turn>>;

int64_t BlockBytes(const std::string& model) {
  TestServerOptions o;
  o.model_path = model;
  TestServer probe(o);
  v1::ServerInfo info;
  grpc::ClientContext ctx;
  EXPECT_TRUE(probe.stub().GetServerInfo(&ctx, {}, &info).ok());
  return info.kv_bytes_per_token() * kBlockSize;
}

TestServerOptions TieredFor(const std::string& model, int64_t device_blocks,
                            int64_t host_blocks) {
  static auto* block_bytes = new std::map<std::string, int64_t>();
  if (!block_bytes->count(model)) (*block_bytes)[model] = BlockBytes(model);
  TestServerOptions o;
  o.model_path = model;
  o.engine.block_size = kBlockSize;
  o.engine.kv_device_bytes = device_blocks * block_bytes->at(model);
  o.engine.kv_host_bytes = host_blocks * block_bytes->at(model);
  return o;
}

v1::ChatRequest Request(const std::string& session, int round) {
  v1::ChatRequest r = UserTurn(
      session, "tell me about " + session + " in round " +
                   std::to_string(round),
      kMaxTokens);
  r.set_ignore_eos(true);  // equal lengths, so that sizes are predictable
  return r;
}

// Round-robin over the sessions: the least recently used session is always
// the next one to speak, the worst case for an LRU cache.
Transcript RunRounds(TestServer& server) {
  Transcript out;
  for (int round = 0; round < kRounds; ++round) {
    for (int s = 0; s < kSessions; ++s) {
      const std::string id = "s" + std::to_string(s);
      TurnOutput o = RunChat(server.stub(), Request(id, round));
      EXPECT_TRUE(o.status.ok()) << id << " round " << round << ": "
                                 << o.status.error_message();
      out[id].push_back({o.tokens, o.summary});
    }
  }
  return out;
}

v1::SessionInfo Session(TestServer& server, const std::string& id) {
  v1::GetSessionRequest req;
  req.set_session_id(id);
  v1::SessionInfo info;
  grpc::ClientContext ctx;
  EXPECT_TRUE(server.stub().GetSession(&ctx, req, &info).ok()) << id;
  return info;
}

// Every test runs on each family's tiny model: the tiers must give the same
// tokens whatever the layer computes.
class MemoryTiersTest : public ::testing::TestWithParam<std::string> {
 protected:
  struct Baseline {
    Transcript reference;
    int64_t max_blocks = 0;
  };

  void SetUp() override {
    // One unlimited-memory run per family, shared by its tests.
    static auto* baselines = new std::map<std::string, Baseline>();
    model_ = TinyModelPath(GetParam());
    if (!baselines->count(model_)) {
      Baseline& b = (*baselines)[model_];
      TestServer unlimited(TieredFor(model_, 4096, 0));
      b.reference = RunRounds(unlimited);
      // Size of the largest session at the end, for the device capacity.
      for (const auto& [id, turns] : b.reference) {
        b.max_blocks = std::max<int64_t>(
            b.max_blocks,
            (turns.back().summary.session_tokens() + kBlockSize - 1) /
                kBlockSize);
      }
    }
    reference_ = &baselines->at(model_).reference;
    max_blocks_ = baselines->at(model_).max_blocks;
  }

  TestServerOptions Tiered(int64_t device_blocks, int64_t host_blocks) const {
    return TieredFor(model_, device_blocks, host_blocks);
  }

  // Room for two sessions of the final size (a quarter of them) plus the
  // blocks a running turn adds.
  int64_t DeviceBlocks() const { return 2 * max_blocks_ + 2; }

  void ExpectSameAsReference(const Transcript& got) {
    for (const auto& [id, turns] : *reference_) {
      ASSERT_EQ(got.at(id).size(), turns.size());
      for (size_t r = 0; r < turns.size(); ++r) {
        EXPECT_EQ(got.at(id)[r].tokens, turns[r].tokens)
            << id << " round " << r;
        EXPECT_EQ(got.at(id)[r].summary.prompt_tokens(),
                  turns[r].summary.prompt_tokens());
      }
    }
  }

  std::string model_;
  const Transcript* reference_ = nullptr;
  int64_t max_blocks_ = 0;
};

INSTANTIATE_TEST_SUITE_P(Families, MemoryTiersTest,
                         ::testing::ValuesIn(kTinyFamilies));

TEST_P(MemoryTiersTest, SwappedSessionsMatchUnlimitedMemory) {
  TestServer server(Tiered(DeviceBlocks(), 4096));
  const Transcript got = RunRounds(server);
  ExpectSameAsReference(got);
  // Every follow-up reuses the whole history, resident or swapped in. In
  // the last round every session has been evicted since its last turn.
  int swap_ins = 0;
  int64_t host_tokens = 0;
  for (const auto& [id, turns] : got) {
    for (size_t r = 1; r < turns.size(); ++r) {
      const v1::TurnSummary& s = turns[r].summary;
      EXPECT_EQ(s.cached_tokens(), turns[r - 1].summary.session_tokens())
          << id << " round " << r;
      if (s.cached_tier() == v1::CACHE_TIER_HOST) {
        EXPECT_GT(s.swap_in_seconds(), 0) << id << " round " << r;
        ++swap_ins;
        host_tokens += s.cached_tokens();
      } else {
        EXPECT_EQ(s.cached_tier(), v1::CACHE_TIER_DEVICE);
        EXPECT_EQ(s.swap_in_seconds(), 0);
      }
    }
    EXPECT_EQ(turns.back().summary.cached_tier(), v1::CACHE_TIER_HOST) << id;
  }
  const runtime::EngineStats st = server.engine().Stats();
  using session_store::Tier;
  EXPECT_EQ(st.swap_in_turns, swap_ins);
  EXPECT_EQ(st.recomputed_turns, 0);
  // Every swap-in and every session now on host was swapped out once per
  // stay; nothing was dropped.
  EXPECT_EQ(st.store.evicted(Tier::kDevice, Tier::kHost),
            swap_ins + st.store.tier(Tier::kHost).sessions);
  EXPECT_EQ(st.store.evicted(Tier::kDevice, Tier::kDropped), 0);
  EXPECT_EQ(st.store.evicted(Tier::kHost, Tier::kDropped), 0);
  EXPECT_EQ(st.store.swap_in_blocks, st.copies.blocks - st.store.swap_out_blocks -
                                         st.store.cow_blocks);
  EXPECT_LE(st.store.tier(Tier::kDevice).used_blocks, DeviceBlocks());
  EXPECT_EQ(st.cached_tokens_host, host_tokens);
}

TEST_P(MemoryTiersTest, DroppedSessionsAreRecomputedExactly) {
  TestServer server(Tiered(DeviceBlocks(), 0));
  const Transcript got = RunRounds(server);
  ExpectSameAsReference(got);
  int recomputed = 0;
  for (const auto& [id, turns] : got) {
    for (size_t r = 1; r < turns.size(); ++r) {
      const v1::TurnSummary& s = turns[r].summary;
      if (s.cached_tier() == v1::CACHE_TIER_RECOMPUTED) {
        // Only what other sessions share (the common start of the first
        // message) is found; the rest of the history is computed again.
        EXPECT_EQ(s.cached_tokens() % kBlockSize, 0);
        EXPECT_LE(s.cached_tokens(), kBlockSize);
        EXPECT_EQ(s.prefilled_tokens(), s.prompt_tokens() - s.cached_tokens());
        ++recomputed;
      } else {
        EXPECT_EQ(s.cached_tier(), v1::CACHE_TIER_DEVICE) << id << " " << r;
        EXPECT_EQ(s.cached_tokens(), turns[r - 1].summary.session_tokens());
      }
    }
    EXPECT_EQ(turns.back().summary.cached_tier(), v1::CACHE_TIER_RECOMPUTED)
        << id;
    // The history survives the drop.
    EXPECT_EQ(Session(server, id).tokens(),
              turns.back().summary.session_tokens());
  }
  const runtime::EngineStats st = server.engine().Stats();
  using session_store::Tier;
  EXPECT_EQ(st.recomputed_turns, recomputed);
  EXPECT_EQ(st.store.evicted(Tier::kDevice, Tier::kDropped),
            recomputed + st.store.tier(Tier::kDropped).sessions);
  EXPECT_EQ(st.store.evicted(Tier::kDevice, Tier::kHost), 0);
  EXPECT_EQ(st.store.swap_in_blocks, 0);
}

TEST_P(MemoryTiersTest, SmallHostTierSwapsSomeAndDropsTheRest) {
  // The host holds about two sessions: the rest fall through to dropped.
  TestServer server(Tiered(DeviceBlocks(), 2 * max_blocks_));
  const Transcript got = RunRounds(server);
  ExpectSameAsReference(got);
  const runtime::EngineStats st = server.engine().Stats();
  using session_store::Tier;
  EXPECT_GT(st.swap_in_turns, 0);
  EXPECT_GT(st.recomputed_turns, 0);
  EXPECT_GT(st.store.evicted(Tier::kHost, Tier::kDropped), 0);
  // Each session leaves the device once per swap-in or recompute, or is
  // away now; from host it is dropped or swapped back in.
  EXPECT_EQ(st.store.evicted(Tier::kDevice, Tier::kHost) +
                st.store.evicted(Tier::kDevice, Tier::kDropped),
            st.swap_in_turns + st.recomputed_turns +
                st.store.tier(Tier::kHost).sessions +
                st.store.tier(Tier::kDropped).sessions);
  EXPECT_EQ(st.store.evicted(Tier::kDevice, Tier::kHost),
            st.swap_in_turns + st.store.evicted(Tier::kHost, Tier::kDropped) +
                st.store.tier(Tier::kHost).sessions);
}

TEST_P(MemoryTiersTest, PinnedSessionStaysResident) {
  TestServer server(Tiered(DeviceBlocks(), 4096));
  Transcript got;
  for (int round = 0; round < kRounds; ++round) {
    for (int s = 0; s < kSessions; ++s) {
      const std::string id = "s" + std::to_string(s);
      v1::ChatRequest req = Request(id, round);
      if (s == 0 && round == 0) req.set_pin(true);
      TurnOutput o = RunChat(server.stub(), req);
      ASSERT_TRUE(o.status.ok()) << o.status.error_message();
      got[id].push_back({o.tokens, o.summary});
    }
  }
  ExpectSameAsReference(got);
  for (size_t r = 1; r < kRounds; ++r) {
    EXPECT_EQ(got["s0"][r].summary.cached_tier(), v1::CACHE_TIER_DEVICE)
        << "round " << r;
  }
  // The others were evicted around it.
  for (int s = 1; s < kSessions; ++s) {
    EXPECT_EQ(got["s" + std::to_string(s)].back().summary.cached_tier(),
              v1::CACHE_TIER_HOST)
        << s;
  }
  EXPECT_TRUE(Session(server, "s0").pinned());
  EXPECT_EQ(Session(server, "s0").state(), v1::SESSION_STATE_RESIDENT);
  // Unpinning makes it an ordinary eviction candidate again.
  v1::ChatRequest unpin = Request("s0", kRounds);
  unpin.set_pin(false);
  ASSERT_TRUE(RunChat(server.stub(), unpin).status.ok());
  EXPECT_FALSE(Session(server, "s0").pinned());
}

TEST_P(MemoryTiersTest, SharedSystemPromptIsStoredOnce) {
  constexpr int kShared = 50;
  const std::string system =
      "You are the support assistant of a small bakery. Answer briefly, "
      "politely and only about bread, cakes, opening hours and orders. If "
      "you do not know, say so and suggest calling the shop.";
  auto request = [&](int i) {
    v1::ChatRequest r;
    r.set_session_id("bakery-" + std::to_string(i));
    r.set_mode(v1::HISTORY_MODE_APPEND);
    v1::Message* sys = r.add_messages();
    sys->set_role("system");
    sys->set_content(system);
    v1::Message* user = r.add_messages();
    user->set_role("user");
    user->set_content("question number " + std::to_string(i));
    r.set_max_tokens(4);
    r.set_ignore_eos(true);
    return r;
  };
  TestServerOptions unshared_options = Tiered(4096, 0);
  unshared_options.engine.share_prefixes = false;
  TestServer unshared(unshared_options);
  TestServer shared(Tiered(4096, 0));

  int32_t shared_tokens = -1;
  int64_t private_blocks = 0;
  for (int i = 0; i < kShared; ++i) {
    TurnOutput a = RunChat(unshared.stub(), request(i));
    TurnOutput b = RunChat(shared.stub(), request(i));
    ASSERT_TRUE(a.status.ok() && b.status.ok());
    EXPECT_EQ(a.tokens, b.tokens) << "session " << i;
    EXPECT_EQ(a.summary.cached_tokens(), 0);
    if (i == 0) {
      EXPECT_EQ(b.summary.cached_tokens(), 0);
      continue;
    }
    // Every later session reuses the full blocks of the common prefix.
    if (shared_tokens < 0) shared_tokens = b.summary.cached_tokens();
    EXPECT_EQ(b.summary.cached_tokens(), shared_tokens) << "session " << i;
    EXPECT_EQ(b.summary.cached_tier(), v1::CACHE_TIER_DEVICE);
  }
  ASSERT_GT(shared_tokens, 0);
  ASSERT_EQ(shared_tokens % kBlockSize, 0);
  const int64_t prefix_blocks = shared_tokens / kBlockSize;
  for (int i = 0; i < kShared; ++i) {
    const v1::SessionInfo info =
        Session(shared, "bakery-" + std::to_string(i));
    EXPECT_EQ(info.shared_blocks(), prefix_blocks) << i;
    private_blocks += info.blocks() - prefix_blocks;
  }
  auto device_used = [](TestServer& s) {
    v1::ServerInfo info;
    grpc::ClientContext ctx;
    EXPECT_TRUE(s.stub().GetServerInfo(&ctx, {}, &info).ok());
    for (const v1::TierInfo& t : info.tiers()) {
      if (t.tier() == "device") return t.used_bytes();
    }
    return int64_t{-1};
  };
  const int64_t block_bytes = BlockBytes(model_);
  // The prefix once, plus each session's own blocks.
  EXPECT_EQ(device_used(shared), (prefix_blocks + private_blocks) * block_bytes);
  EXPECT_EQ(device_used(unshared),
            (kShared * prefix_blocks + private_blocks) * block_bytes);
  const runtime::EngineStats st = shared.engine().Stats();
  EXPECT_EQ(st.store.shared_blocks, prefix_blocks);
  EXPECT_EQ(st.store.saved_blocks, (kShared - 1) * prefix_blocks);
}

}  // namespace
}  // namespace kvsession::testing
