#include "runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"
#include "runtime/engine_internal.h"

namespace kvsession::runtime {

Engine::Engine(ModelBundle* bundle, const Options& options)
    : bundle_(bundle), options_(options) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(ModelBundle* bundle,
                                                       const Options& options) {
  if (options.block_size <= 0 || options.max_batch_tokens <= 0 ||
      options.max_running <= 0 || options.max_running > options.max_batch_tokens) {
    return absl::InvalidArgumentError(
        "engine: block_size, max_batch_tokens and max_running must be "
        "positive, max_running <= max_batch_tokens");
  }
  if (absl::Status s = bundle->backend->CheckBlockSize(options.block_size);
      !s.ok()) {
    return s;
  }
  std::unique_ptr<Engine> e(new Engine(bundle, options));
  e->clock_ = options.clock != nullptr ? options.clock
                                        : session_store::SystemClock::Get();
  const ModelConfig& c = bundle->model->config();
  e->kv_.block_size = options.block_size;
  e->kv_.n_layers = c.n_layers;
  e->kv_.n_kv_heads = c.n_kv_heads;
  e->kv_.head_dim = c.head_dim;
  const int64_t block_bytes = e->kv_block_bytes();
  const int64_t n_blocks = options.kv_device_bytes / block_bytes;
  if (n_blocks < 1 || n_blocks > (1 << 30)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "engine: --kv_device_bytes ", options.kv_device_bytes,
        " holds no KV block of ", block_bytes, " bytes"));
  }
  const int64_t n_host_blocks = std::max<int64_t>(options.kv_host_bytes, 0) /
                                block_bytes;
  if (n_host_blocks > (1 << 30)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "engine: --kv_host_bytes ", options.kv_host_bytes, " is too large"));
  }
  if (!(options.max_pinned_fraction >= 0 && options.max_pinned_fraction <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("engine: the pinned fraction must be in [0, 1], got ",
                     options.max_pinned_fraction));
  }
  e->kv_.num_blocks = static_cast<int32_t>(n_blocks);
  absl::StatusOr<std::unique_ptr<kernels::Buffer>> arena =
      bundle->backend->Allocate(static_cast<size_t>(n_blocks * block_bytes));
  if (!arena.ok()) return arena.status();
  e->arena_ = *std::move(arena);
  e->kv_.base = e->arena_->as<uint16_t>();
  // Plain memory on the CPU backend; pinned host memory on a GPU backend.
  absl::StatusOr<std::unique_ptr<kernels::Buffer>> host =
      bundle->backend->AllocateHost(
          static_cast<size_t>(n_host_blocks * block_bytes));
  if (!host.ok()) return host.status();
  e->host_arena_ = *std::move(host);

  session_store::SessionStore::Options so;
  so.block_size = options.block_size;
  so.num_device_blocks = e->kv_.num_blocks;
  so.num_host_blocks = static_cast<int32_t>(n_host_blocks);
  so.block_bytes = block_bytes;
  so.max_sessions = options.max_sessions;
  so.idle_ttl = options.idle_ttl;
  so.device_idle_ttl = options.device_idle_ttl;
  so.host_idle_ttl = options.host_idle_ttl;
  so.max_pinned_tokens = static_cast<int64_t>(
      options.max_pinned_fraction * static_cast<double>(n_blocks) *
      options.block_size);
  so.share_prefixes = options.share_prefixes;
  so.clock = e->clock_;
  absl::StatusOr<std::unique_ptr<session_store::SessionStore>> store =
      session_store::SessionStore::Create(so);
  if (!store.ok()) return store.status();
  e->store_ = *std::move(store);
  Engine* raw = e.get();
  e->copier_ = std::make_unique<CopyWorker>(
      [raw](const session_store::CopyBatch& b) { raw->MoveBlocks(b); },
      [raw] {
        // Wakes the step loop when it sleeps only because sequences wait
        // for copies.
        std::lock_guard<std::mutex> lock(raw->mu_);
        raw->cv_.notify_all();
      });
  e->thread_ = std::thread([raw] { raw->Loop(); });
  return e;
}

Engine::~Engine() {
  Stop();
  // Lands the copies still queued while the arenas and the lock its
  // progress callback takes are alive.
  copier_.reset();
}

void Engine::MoveBlocks(const session_store::CopyBatch& batch) {
  using session_store::Tier;
  auto base = [&](Tier t) -> void* {
    return t == Tier::kDevice ? arena_->data() : host_arena_->data();
  };
  moves_.clear();
  for (const session_store::BlockCopy& c : batch.copies) {
    moves_.push_back({c.src, c.dst});
  }
  // The CPU backend copies with memcpy; a GPU backend on its copy stream,
  // concurrently with the step running on the compute stream.
  bundle_->backend->CopyBlocks(base(batch.from), base(batch.to),
                               static_cast<size_t>(kv_block_bytes()), moves_);
}

void Engine::FlushCopies() { copier_->Submit(store_->TakeCopies()); }

bool Engine::Ready(Sequence& seq) {
  if (seq.ready_ticket == 0) return true;
  if (!copier_->Landed(seq.ready_ticket)) return false;
  seq.ready_ticket = 0;
  if (seq.swap_in_ticket != 0) {
    std::optional<CopyWorker::Clock::time_point> landed =
        copier_->TakeLandedTime(seq.swap_in_ticket);
    if (landed.has_value()) {
      // From planning the copy (admission) to its landing: waiting in the
      // queue before admission is not swap-in time.
      seq.result.swap_in_seconds =
          std::chrono::duration<double>(*landed - seq.admitted).count();
    }
    seq.swap_in_ticket = 0;
  }
  return true;
}

bool Engine::AnyReady() {
  for (const auto& seq : active_) {
    if (seq->ready_ticket == 0 || copier_->Landed(seq->ready_ticket)) {
      return true;
    }
  }
  return false;
}

int64_t Engine::kv_block_bytes() const {
  return kv_.BlockElems() * static_cast<int64_t>(sizeof(uint16_t));
}

std::shared_ptr<TurnHandle> Engine::Submit(
    TurnRequest request, std::shared_ptr<TurnObserver> observer) {
  auto seq = std::make_unique<Sequence>();
  seq->handle = std::make_shared<TurnHandle>();
  seq->req = std::move(request);
  seq->observer = std::move(observer);
  seq->arrival = clock_->Now();
  seq->start = std::chrono::steady_clock::now();
  std::shared_ptr<TurnHandle> handle = seq->handle;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      queue_.push_back(Task{std::move(seq), nullptr});
      cv_.notify_one();
      return handle;
    }
  }
  seq->observer->OnDone(absl::UnavailableError("the server is shutting down"),
                        seq->result);
  return handle;
}

void Engine::Post(std::function<void(bool)> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      queue_.push_back(Task{nullptr, std::move(fn)});
      cv_.notify_one();
      return;
    }
  }
  fn(false);
}

namespace {
absl::Status Stopped() {
  return absl::UnavailableError("the server is shutting down");
}
}  // namespace

Engine::SessionInfoOr Engine::DoGetSession(const std::string& id) const {
  return store_->GetInfo(id);
}

Engine::BlocksOr Engine::DoDeleteSession(const std::string& id) {
  absl::StatusOr<session_store::SessionInfo> info = store_->GetInfo(id);
  if (!info.ok()) return info.status();
  if (absl::Status s = store_->Delete(id); !s.ok()) return s;
  return info->num_blocks;
}

EngineStats Engine::DoStats() const {
  EngineStats out = stats_;
  out.running_sequences = static_cast<int32_t>(active_.size());
  out.store = store_->Stats();
  out.kv_block_bytes = kv_block_bytes();
  out.copies = copier_->stats();
  std::lock_guard<std::mutex> lock(mu_);
  out.queue_depth = static_cast<int32_t>(queue_.size());
  return out;
}

void Engine::GetSessionAsync(std::string id,
                             std::function<void(SessionInfoOr)> done) {
  CallAsync<SessionInfoOr>([this, id] { return DoGetSession(id); },
                           std::move(done), Stopped());
}

void Engine::ListSessionsAsync(int32_t page_size, std::string page_token,
                               std::function<void(SessionPageOr)> done) {
  CallAsync<SessionPageOr>(
      [this, page_size, page_token] {
        return store_->List(page_size, page_token);
      },
      std::move(done), Stopped());
}

void Engine::DeleteSessionAsync(std::string id,
                                std::function<void(BlocksOr)> done) {
  Post([this, id = std::move(id), done = std::move(done)](bool running) {
    if (!running) {
      done(Stopped());
      return;
    }
    Delete(id,
           std::chrono::steady_clock::now() +
               absl::ToChronoNanoseconds(options_.busy_grace),
           done);
  });
}

void Engine::StatsAsync(std::function<void(EngineStats)> done) {
  CallAsync<EngineStats>([this] { return DoStats(); }, std::move(done),
                         EngineStats());
}

Engine::SessionInfoOr Engine::GetSession(const std::string& id) {
  return CallSync<SessionInfoOr>([&] { return DoGetSession(id); }, Stopped());
}

Engine::SessionPageOr Engine::ListSessions(int32_t page_size,
                                           const std::string& page_token) {
  return CallSync<SessionPageOr>(
      [&] { return store_->List(page_size, page_token); }, Stopped());
}

Engine::BlocksOr Engine::DeleteSession(const std::string& id) {
  std::promise<BlocksOr> result;
  std::future<BlocksOr> f = result.get_future();
  DeleteSessionAsync(id, [&result](BlocksOr v) { result.set_value(std::move(v)); });
  return f.get();
}

EngineStats Engine::Stats() {
  return CallSync<EngineStats>([&] { return DoStats(); }, EngineStats());
}

int Engine::EvictAll(session_store::Tier from) {
  // How many moved, and the ticket of the last copy that planned.
  const auto [moved, ticket] = CallSync<std::pair<int, uint64_t>>(
      [&] {
        const int n = store_->EvictAll(from);
        FlushCopies();
        return std::make_pair(n, store_->last_ticket());
      },
      {0, 0});
  copier_->WaitFor(ticket);
  return moved;
}

absl::StatusOr<std::vector<int32_t>> Engine::SessionTokens(
    const std::string& id) {
  return CallSync<absl::StatusOr<std::vector<int32_t>>>(
      [&]() -> absl::StatusOr<std::vector<int32_t>> {
        if (!store_->GetInfo(id).ok()) {
          return absl::NotFoundError(
              absl::StrCat("session '", id, "' not found"));
        }
        return store_->History(id);
      },
      Stopped());
}

void Engine::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void Engine::Loop() {
  while (true) {
    std::deque<Task> tasks;
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Sequences that only wait for copies do not spin the loop: the copy
      // worker wakes it when a batch lands.
      // Timed: deferred turns give up on a live session after a grace, and
      // idle limits apply while nothing else happens.
      cv_.wait_for(lock,
                   deferred_.empty() ? std::chrono::milliseconds(1000)
                                     : std::chrono::milliseconds(5),
                   [&] { return stopping_ || !queue_.empty() || AnyReady(); });
      stopping = stopping_;
      // Admit new turns only while there is room; calls always run.
      while (!queue_.empty()) {
        Task& t = queue_.front();
        if (t.turn != nullptr && !stopping &&
            active_.size() + tasks.size() >=
                static_cast<size_t>(options_.max_running)) {
          break;
        }
        tasks.push_back(std::move(t));
        queue_.pop_front();
      }
    }
    // Before the calls, so that a query never sees a session past its
    // idle limit.
    store_->ExpireIdle();
    for (Task& t : tasks) {
      if (t.call) {
        t.call(true);
      } else if (stopping) {
        t.turn->observer->OnDone(
            absl::CancelledError("the server is shutting down"),
            t.turn->result);
      } else {
        Admit(std::move(t.turn));
      }
    }
    if (stopping) {
      for (auto& seq : active_) {
        // No flush: a kept last token without KV stays in the tail.
        if (!seq->result.cancelled) {
          Interrupt(*seq, absl::CancelledError("the server is shutting down"));
        }
        Finish(*seq, seq->final_status);
      }
      active_.clear();
      for (Deferred& d : deferred_) {
        if (d.turn != nullptr) {
          d.turn->observer->OnDone(
              absl::CancelledError("the server is shutting down"),
              d.turn->result);
        } else {
          d.erase(Stopped());
        }
      }
      deferred_.clear();
      std::deque<Task> rest;
      {
        std::lock_guard<std::mutex> lock(mu_);
        rest.swap(queue_);
      }
      for (Task& t : rest) {
        if (t.call) {
          t.call(true);
        } else {
          t.turn->observer->OnDone(
              absl::CancelledError("the server is shutting down"),
              t.turn->result);
        }
      }
      return;
    }
    FlushCopies();
    if (!active_.empty()) Step();
    RunDeferred();
    if (options_.check_invariants) KVS_CHECK_OK(store_->CheckInvariants());
  }
}


Engine::Blocker Engine::BlockerOf(std::string_view session_id) const {
  const absl::Time now = clock_->Now();
  for (const auto& seq : active_) {
    if (seq->anonymous || seq->req.session_id != session_id) continue;
    const bool ending = seq->result.cancelled || seq->Interrupted(now) ||
                        seq->phase == Sequence::Phase::kFlush;
    return ending ? Blocker::kUnwinding : Blocker::kLive;
  }
  // Work queued earlier for the session goes first.
  for (const Deferred& d : deferred_) {
    if (d.session_id == session_id) return Blocker::kUnwinding;
  }
  return Blocker::kNone;
}

void Engine::Admit(std::unique_ptr<Sequence> seq) {
  const std::string& id = seq->req.session_id;
  if (!id.empty()) {
    const Blocker b = BlockerOf(id);
    const auto give_up = seq->start + absl::ToChronoNanoseconds(
                                          options_.busy_grace);
    if (b == Blocker::kLive && std::chrono::steady_clock::now() >= give_up) {
      seq->observer->OnDone(
          absl::AbortedError(absl::StrCat(
              "session '", id, "' is busy with another request")),
          seq->result);
      return;
    }
    if (b != Blocker::kNone) {
      deferred_.push_back({id, give_up, std::move(seq), nullptr});
      return;
    }
  }
  if (absl::Status st = Open(*seq); !st.ok()) {
    Finish(*seq, st);
    return;
  }
  active_.push_back(std::move(seq));
}

void Engine::Delete(std::string id,
                    std::chrono::steady_clock::time_point give_up,
                    std::function<void(BlocksOr)> done) {
  const Blocker b = BlockerOf(id);
  if (b == Blocker::kUnwinding ||
      (b == Blocker::kLive && std::chrono::steady_clock::now() < give_up)) {
    deferred_.push_back({std::move(id), give_up, nullptr, std::move(done)});
    return;
  }
  // A live turn past the grace: the store answers FAILED_PRECONDITION.
  done(DoDeleteSession(id));
}

void Engine::RunDeferred() {
  std::deque<Deferred> waiting;
  waiting.swap(deferred_);
  for (Deferred& d : waiting) {
    if (d.turn != nullptr) {
      Admit(std::move(d.turn));
    } else {
      Delete(std::move(d.session_id), d.give_up, std::move(d.erase));
    }
  }
}

absl::Status Engine::Open(Sequence& seq) {
  TurnRequest& req = seq.req;
  const ModelConfig& c = bundle_->model->config();
  seq.result.session_id = req.session_id;
  seq.anonymous = req.session_id.empty() || !req.use_cache;
  seq.store_id = seq.anonymous
                     ? absl::StrCat("\x01turn-", ++anonymous_counter_)
                     : req.session_id;

  // Build the full token sequence of this turn.
  std::vector<int32_t> tokens;
  if (req.append && !req.session_id.empty()) {
    // The no-cache baseline reads the history but never changes it.
    if (store_->GetInfo(req.session_id).ok()) {
      tokens = store_->History(req.session_id);
    } else if (!req.create_session) {
      return absl::NotFoundError(absl::StrCat(
          "session '", req.session_id, "' does not exist"));
    }
    if (tokens.empty()) {
      tokens = std::move(req.first_turn_tokens);
    } else {
      const bool closed = bundle_->tokenizer->IsEndOfGeneration(tokens.back());
      const std::vector<int32_t>& glue =
          closed ? req.turn_separator : req.close_turn;
      tokens.insert(tokens.end(), glue.begin(), glue.end());
      tokens.insert(tokens.end(), req.tokens.begin(), req.tokens.end());
    }
  } else {
    tokens = std::move(req.tokens);
  }
  if (tokens.empty()) return absl::InvalidArgumentError("the prompt is empty");
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n >= c.context_length) {
    return absl::OutOfRangeError(absl::StrCat(
        "the prompt has ", n, " tokens; the context window is ",
        c.context_length, " and at least one token must be generated"));
  }
  // An explicit max_tokens must fit; the default shrinks to what does.
  if (req.max_tokens > 0 && n + req.max_tokens > c.context_length) {
    return absl::OutOfRangeError(absl::StrCat(
        "max_tokens: the prompt has ", n, " tokens and max_tokens is ",
        req.max_tokens, "; together they exceed the context window of ",
        c.context_length, " tokens"));
  }
  seq.max_tokens =
      req.max_tokens > 0
          ? req.max_tokens
          : static_cast<int32_t>(std::min<int64_t>(options_.default_max_tokens,
                                                   c.context_length - n));
  // Before the swap-in is planned: the worker may land it at once.
  seq.admitted = std::chrono::steady_clock::now();
  absl::StatusOr<session_store::TurnPlan> plan = store_->BeginTurn(
      seq.store_id, tokens, seq.anonymous || req.create_session,
      seq.anonymous ? std::nullopt : req.pin, /*share=*/req.use_cache,
      /*ephemeral=*/seq.anonymous);
  FlushCopies();
  if (!plan.ok()) return plan.status();
  seq.opened = true;
  seq.tokens = std::move(tokens);
  seq.prompt_len = static_cast<int32_t>(n);
  seq.computed = plan->reused_tokens;
  seq.ready_ticket = plan->ready_ticket;
  if (plan->swapped_in_blocks > 0) seq.swap_in_ticket = plan->ready_ticket;
  RecordPlan(seq, *plan);
  seq.sampler.emplace(req.sampling);
  seq.detok.emplace(*bundle_->tokenizer);
  seq.stop.emplace(req.stop);
  seq.phase = Sequence::Phase::kPrefill;
  return absl::OkStatus();
}

void Engine::RecordPlan(Sequence& seq, const session_store::TurnPlan& plan) {
  TurnResult& r = seq.result;
  r.prompt_tokens = seq.prompt_len;
  r.cached_tokens = plan.reused_tokens;
  if (plan.recomputed) {
    r.cached_tier = CacheTier::kRecomputed;
    ++stats_.recomputed_turns;
  } else if (plan.reused_from == session_store::Tier::kHost) {
    r.cached_tier = CacheTier::kHost;
    ++stats_.swap_in_turns;
  } else {
    r.cached_tier = plan.reused_tokens > 0 ? CacheTier::kDevice
                                           : CacheTier::kNone;
  }
  r.prefilled_tokens = r.prompt_tokens - r.cached_tokens;
  stats_.prompt_tokens += r.prompt_tokens;
  if (plan.reused_from == session_store::Tier::kHost) {
    stats_.cached_tokens_host += r.cached_tokens;
  } else {
    stats_.cached_tokens_device += r.cached_tokens;
  }
}

std::vector<session_store::TranscriptMessage> Engine::Transcript(
    const Sequence& seq) const {
  std::vector<session_store::TranscriptMessage> out;
  const TurnRequest& req = seq.req;
  // A raw completion's history has no transcript.
  if (!req.messages.has_value()) return out;
  if (req.append) {
    absl::StatusOr<session_store::SessionInfo> info =
        store_->GetInfo(seq.store_id);
    if (info.ok()) out = std::move(info->transcript);
  }
  out.insert(out.end(), req.messages->begin(), req.messages->end());
  // The reply as far as the kept tokens were sent.
  const int32_t keep = seq.keep.value_or(seq.delivered);
  std::string reply = keep < seq.delivered && keep > 0
                          ? seq.reply.substr(0, seq.reply_at[keep - 1])
                          : seq.reply;
  out.push_back({"assistant", std::move(reply)});
  return out;
}

void Engine::Finish(Sequence& seq, const absl::Status& status) {
  TurnResult& r = seq.result;
  r.generated_tokens = seq.keep.value_or(seq.delivered);
  if (seq.opened) {
    const bool interrupted = absl::IsCancelled(status) ||
                             absl::IsDeadlineExceeded(status);
    const bool kept = !seq.anonymous &&
                      (status.ok() || (interrupted && r.generated_tokens > 0));
    if (kept) {
      store_->EndTurn(seq.store_id, seq.tokens, Transcript(seq));
    } else {
      store_->AbortTurn(seq.store_id);
      if (!seq.anonymous) r.generated_tokens = 0;  // nothing of it stays
    }
    absl::StatusOr<session_store::SessionInfo> info =
        seq.anonymous ? absl::NotFoundError("") : store_->GetInfo(seq.store_id);
    r.session_tokens = info.ok() ? info->num_tokens : 0;
    ++stats_.turns;
  }
  r.total_seconds = std::chrono::duration<double>(
                        std::chrono::steady_clock::now() - seq.start)
                        .count();
  seq.observer->OnDone(status, r);
}

}  // namespace kvsession::runtime
