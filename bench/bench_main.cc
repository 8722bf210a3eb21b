// kvsession-bench: drives a running kvsession-server over gRPC with
// synthetic chat workloads and prints tables (and JSON with --json_out).
// Never fails on speed.
//   single:  one session, 8 turns of ~100 new user tokens and 32 generated,
//            with the cache and with a fresh session per turn (recompute).
//   multi:   16 sessions x 4 turns round robin, sequential and with 4
//            concurrent clients.
//   classic: 100 tokens after a short prompt, use_cache on vs off.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "grpcpp/grpcpp.h"
#include "kvsession/v1/kvsession.grpc.pb.h"

ABSL_FLAG(std::string, addr, "localhost:50051", "Server address");
ABSL_FLAG(std::string, workload, "all", "single, multi, classic or all");
ABSL_FLAG(std::string, json_out, "", "Write results as JSON here");
ABSL_FLAG(int32_t, turns, 8, "Turns of the single-session workload");
ABSL_FLAG(int32_t, single_repeats, 5,
          "Sessions run through the single-session workload; per-turn TTFT "
          "is their median (one noisy turn does not decide the ratio)");
ABSL_FLAG(int32_t, sessions, 16, "Sessions of the multi-session workload");
ABSL_FLAG(int32_t, multi_turns, 4, "Turns per session in the multi workload");
ABSL_FLAG(int32_t, clients, 4, "Concurrent clients in the multi workload");
ABSL_FLAG(int32_t, user_words, 75, "Words per user turn (~100 tokens)");
ABSL_FLAG(int32_t, gen_tokens, 32, "Tokens generated per turn");
ABSL_FLAG(int32_t, classic_tokens, 100, "Tokens generated in the classic comparison");

namespace kvsession {
namespace {

using Clock = std::chrono::steady_clock;

struct TurnStats {
  int turn = 0;
  double ttft = 0;
  double total = 0;
  int prompt = 0;
  int cached = 0;
  int prefilled = 0;
  int generated = 0;
  int history = 0;  // tokens the session held before the turn
  v1::CacheTier tier = v1::CACHE_TIER_UNSPECIFIED;
  double swap_in = 0;
  std::string text;
  bool ok = false;
};

std::string UserText(std::mt19937& rng, int words) {
  static const char* kWords[] = {
      "the", "river", "mountain", "quietly", "history", "of", "engines",
      "and", "a", "small", "garden", "where", "people", "talk", "about",
      "weather", "trains", "music", "numbers", "cities", "light", "because",
      "every", "morning", "new", "questions", "arrive", "with", "coffee"};
  std::uniform_int_distribution<int> d(0, std::size(kWords) - 1);
  std::string s;
  for (int i = 0; i < words; ++i) absl::StrAppend(&s, i ? " " : "", kWords[d(rng)]);
  return s + "?";
}

TurnStats Send(v1::KvSession::Stub& stub, const v1::ChatRequest& req) {
  TurnStats st;
  grpc::ClientContext ctx;
  ctx.AddMetadata("x-session-id", req.session_id());
  const auto t0 = Clock::now();
  auto reader = stub.Chat(&ctx, req);
  v1::ChatEvent ev;
  bool first = true;
  while (reader->Read(&ev)) {
    if (ev.has_delta()) {
      if (first) {
        st.ttft = std::chrono::duration<double>(Clock::now() - t0).count();
        first = false;
      }
      st.text += ev.delta().text();
    } else if (ev.has_summary()) {
      st.prompt = ev.summary().prompt_tokens();
      st.cached = ev.summary().cached_tokens();
      st.prefilled = ev.summary().prefilled_tokens();
      st.generated = ev.summary().generated_tokens();
      st.tier = ev.summary().cached_tier();
      st.swap_in = ev.summary().swap_in_seconds();
    }
  }
  st.total = std::chrono::duration<double>(Clock::now() - t0).count();
  grpc::Status s = reader->Finish();
  st.ok = s.ok();
  if (!s.ok()) {
    std::fprintf(stderr, "turn failed: %s\n", s.error_message().c_str());
  }
  return st;
}

v1::ChatRequest Turn(const std::string& session, const std::string& text) {
  v1::ChatRequest r;
  r.set_session_id(session);
  r.set_mode(v1::HISTORY_MODE_APPEND);
  v1::Message* m = r.add_messages();
  m->set_role("user");
  m->set_content(text);
  r.set_max_tokens(absl::GetFlag(FLAGS_gen_tokens));
  r.set_ignore_eos(true);
  return r;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1,
                            static_cast<size_t>(p / 100.0 * (v.size() - 1) + 0.5));
  return v[i];
}

std::string Json(const std::vector<std::pair<std::string, std::string>>& kv) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : kv) parts.push_back(absl::StrCat("\"", k, "\": ", v));
  return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
}

double Median(std::vector<double> v) { return Percentile(std::move(v), 50); }

std::string RunSingle(v1::KvSession::Stub& stub, std::mt19937& rng) {
  const int turns = absl::GetFlag(FLAGS_turns);
  const int repeats = std::max(1, absl::GetFlag(FLAGS_single_repeats));
  std::vector<std::string> user(turns);
  for (auto& u : user) u = UserText(rng, absl::GetFlag(FLAGS_user_words));
  // cached[r][t]: repetition r of the conversation with the cache; fresh[t]:
  // a new session given the whole conversation (first repetition only).
  std::vector<std::vector<TurnStats>> cached(repeats);
  std::vector<TurnStats> fresh;
  for (int r = 0; r < repeats; ++r) {
    const std::string id = absl::StrFormat("bench-single-%08x", rng());
    int history = 0;
    std::vector<std::pair<std::string, std::string>> transcript;
    for (int t = 0; t < turns; ++t) {
      TurnStats s = Send(stub, Turn(id, user[t]));
      s.turn = t + 1;
      s.history = history;
      history = s.prompt + s.generated;
      cached[r].push_back(s);
      transcript.push_back({"user", user[t]});
      if (r == 0) {
        // The no-cache baseline: a fresh session given the whole
        // conversation in full-history mode.
        v1::ChatRequest full;
        full.set_session_id(absl::StrFormat("bench-fresh-%08x", rng()));
        full.set_mode(v1::HISTORY_MODE_FULL);
        for (const auto& [role, content] : transcript) {
          v1::Message* m = full.add_messages();
          m->set_role(role);
          m->set_content(content);
        }
        full.set_max_tokens(absl::GetFlag(FLAGS_gen_tokens));
        full.set_ignore_eos(true);
        TurnStats f = Send(stub, full);
        f.turn = t + 1;
        fresh.push_back(f);
        grpc::ClientContext ctx;
        v1::DeleteSessionRequest d;
        d.set_session_id(full.session_id());
        v1::DeleteSessionResponse dr;
        (void)stub.DeleteSession(&ctx, d, &dr);
      }
      transcript.push_back({"assistant", s.text});
    }
  }
  std::printf(
      "\nsingle session, %d turns (+%d words, %d generated tokens each), "
      "median of %d sessions\n",
      turns, absl::GetFlag(FLAGS_user_words), absl::GetFlag(FLAGS_gen_tokens),
      repeats);
  std::printf("%4s %7s %7s %9s | %10s %10s | %10s %10s %8s\n", "turn",
              "prompt", "reused", "prefilled", "TTFT ms", "total ms",
              "fresh TTFT", "fresh tot", "speedup");
  std::vector<std::string> rows;
  std::vector<double> ttft(turns);
  int64_t reused = 0, hist = 0;
  for (int t = 0; t < turns; ++t) {
    std::vector<double> tt, tot;
    for (int r = 0; r < repeats; ++r) {
      tt.push_back(cached[r][t].ttft);
      tot.push_back(cached[r][t].total);
      if (t > 0) {
        reused += cached[r][t].cached;
        hist += cached[r][t].history;
      }
    }
    ttft[t] = Median(tt);
    const TurnStats& c = cached[0][t];
    const TurnStats& f = fresh[t];
    std::printf("%4d %7d %7d %9d | %10.1f %10.1f | %10.1f %10.1f %7.2fx\n",
                c.turn, c.prompt, c.cached, c.prefilled, ttft[t] * 1e3,
                Median(tot) * 1e3, f.ttft * 1e3, f.total * 1e3,
                f.ttft / ttft[t]);
    rows.push_back(Json({{"turn", absl::StrCat(c.turn)},
                         {"prompt_tokens", absl::StrCat(c.prompt)},
                         {"reused_tokens", absl::StrCat(c.cached)},
                         {"prefilled_tokens", absl::StrCat(c.prefilled)},
                         {"ttft_median_s", absl::StrCat(ttft[t])},
                         {"total_median_s", absl::StrCat(Median(tot))},
                         {"fresh_ttft_s", absl::StrCat(f.ttft)},
                         {"fresh_total_s", absl::StrCat(f.total)}}));
  }
  const double share = hist ? 100.0 * reused / hist : 0;
  const double flat = turns > 1 ? ttft[turns - 1] / ttft[1] : 0;
  std::printf("history tokens reused: %.2f%%; median TTFT turn %d / turn 2: %.2f\n",
              share, turns, flat);
  return Json({{"turns", absl::StrCat("[", absl::StrJoin(rows, ", "), "]")},
               {"history_reused_pct", absl::StrCat(share)},
               {"ttft_last_over_turn2", absl::StrCat(flat)}});
}

std::string RunMulti(const std::string& addr, std::mt19937& rng, int clients) {
  const int n = absl::GetFlag(FLAGS_sessions);
  const int turns = absl::GetFlag(FLAGS_multi_turns);
  const std::string tag = absl::StrFormat("%08x", rng());
  std::vector<std::vector<std::string>> texts(n, std::vector<std::string>(turns));
  for (auto& s : texts) {
    for (auto& t : s) t = UserText(rng, absl::GetFlag(FLAGS_user_words));
  }
  std::vector<std::vector<TurnStats>> stats(turns, std::vector<TurnStats>(n));
  std::vector<int> history(n, 0);
  std::atomic<int> next{0};
  std::mutex mu;
  const auto t0 = Clock::now();
  // Round robin: all sessions' turn 1, then all turn 2, ...; `clients`
  // workers take the next (turn, session) pair of the current round.
  for (int t = 0; t < turns; ++t) {
    next = 0;
    std::vector<std::thread> workers;
    for (int c = 0; c < clients; ++c) {
      workers.emplace_back([&, t] {
        auto stub = v1::KvSession::NewStub(
            grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
        for (int i = next++; i < n; i = next++) {
          TurnStats s = Send(*stub, Turn(absl::StrCat("bench-multi-", tag, "-",
                                                      clients, "-", i),
                                         texts[i][t]));
          std::lock_guard<std::mutex> lock(mu);
          s.history = history[i];
          history[i] = s.prompt + s.generated;
          stats[t][i] = s;
        }
      });
    }
    for (auto& w : workers) w.join();
  }
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("\n%d sessions x %d turns, %d client%s: wall %.2f s\n", n, turns,
              clients, clients > 1 ? "s" : "", wall);
  // "host": turns whose history was swapped in; "recomp": turns whose
  // session had been dropped.
  std::printf("%4s %10s %10s %10s %10s %6s %6s %12s\n", "turn", "mean ms",
              "p50 ms", "p99 ms", "reused %", "host", "recomp",
              "swap-in ms");
  std::vector<std::string> rows;
  int64_t reused = 0, hist = 0;
  for (int t = 0; t < turns; ++t) {
    std::vector<double> ttft;
    int64_t r = 0, h = 0;
    int from_host = 0, recomputed = 0;
    double swap_in = 0;
    for (const TurnStats& s : stats[t]) {
      ttft.push_back(s.ttft * 1e3);
      // Reuse of the session's own history: blocks shared with other
      // sessions can exceed it only on a first turn.
      r += std::min(s.cached, s.history);
      h += s.history;
      from_host += s.tier == v1::CACHE_TIER_HOST;
      recomputed += s.tier == v1::CACHE_TIER_RECOMPUTED;
      swap_in += s.swap_in;
    }
    const double mean = std::accumulate(ttft.begin(), ttft.end(), 0.0) / ttft.size();
    std::printf("%4d %10.1f %10.1f %10.1f %10s %6d %6d %12s\n", t + 1, mean,
                Percentile(ttft, 50), Percentile(ttft, 99),
                h ? absl::StrFormat("%.2f", 100.0 * r / h).c_str() : "-",
                from_host, recomputed,
                from_host ? absl::StrFormat("%.2f", 1e3 * swap_in / from_host)
                                .c_str()
                          : "-");
    if (t > 0) {
      reused += r;
      hist += h;
    }
    rows.push_back(Json({{"turn", absl::StrCat(t + 1)},
                         {"ttft_mean_ms", absl::StrCat(mean)},
                         {"ttft_p50_ms", absl::StrCat(Percentile(ttft, 50))},
                         {"ttft_p99_ms", absl::StrCat(Percentile(ttft, 99))},
                         {"from_host", absl::StrCat(from_host)},
                         {"recomputed", absl::StrCat(recomputed)}}));
  }
  const double share = hist ? 100.0 * reused / hist : 0;
  std::printf("history tokens reused: %.2f%%\n", share);
  return Json({{"clients", absl::StrCat(clients)},
               {"wall_s", absl::StrCat(wall)},
               {"history_reused_pct", absl::StrCat(share)},
               {"turns", absl::StrCat("[", absl::StrJoin(rows, ", "), "]")}});
}

std::string RunClassic(v1::KvSession::Stub& stub, std::mt19937& rng) {
  auto run = [&](bool cache) {
    v1::ChatRequest r = Turn(absl::StrFormat("bench-classic-%08x", rng()),
                             "Tell me about the sea.");
    r.set_max_tokens(absl::GetFlag(FLAGS_classic_tokens));
    r.set_use_cache(cache);
    return Send(stub, r);
  };
  run(true);  // warm-up
  const TurnStats on = run(true);
  const TurnStats off = run(false);
  std::printf("\nclassic: %d tokens after a short prompt\n",
              absl::GetFlag(FLAGS_classic_tokens));
  std::printf("  with KV cache:    %8.1f ms (%.1f tokens/s)\n", on.total * 1e3,
              on.generated / on.total);
  std::printf("  without KV cache: %8.1f ms (%.1f tokens/s)\n", off.total * 1e3,
              off.generated / off.total);
  std::printf("  speed-up: %.2fx\n", off.total / on.total);
  return Json({{"cache_s", absl::StrCat(on.total)},
               {"no_cache_s", absl::StrCat(off.total)},
               {"speedup", absl::StrCat(off.total / on.total)}});
}

int Run() {
  const std::string addr = absl::GetFlag(FLAGS_addr);
  auto stub = v1::KvSession::NewStub(
      grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
  std::mt19937 rng(std::random_device{}());
  const std::string w = absl::GetFlag(FLAGS_workload);
  std::vector<std::pair<std::string, std::string>> out;
  if (w == "single" || w == "all") out.push_back({"single", RunSingle(*stub, rng)});
  if (w == "multi" || w == "all") {
    out.push_back({"multi_sequential", RunMulti(addr, rng, 1)});
    out.push_back({"multi_concurrent",
                   RunMulti(addr, rng, absl::GetFlag(FLAGS_clients))});
  }
  if (w == "classic" || w == "all") out.push_back({"classic", RunClassic(*stub, rng)});
  if (!absl::GetFlag(FLAGS_json_out).empty()) {
    std::ofstream(absl::GetFlag(FLAGS_json_out)) << Json(out) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace kvsession

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return kvsession::Run();
}
