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

namespace kvsession::runtime {

struct Engine::Sequence {
  enum class Phase { kPrefill, kDecode, kFlush };

  TurnRequest req;
  std::shared_ptr<TurnObserver> observer;
  std::shared_ptr<TurnHandle> handle;
  std::string store_id;
  bool anonymous = false;
  absl::Time arrival;
  std::chrono::steady_clock::time_point start;

  // Prompt, then generated tokens. tokens[0, computed) have KV in the store;
  // at most the last sampled token is still without.
  std::vector<int32_t> tokens;
  int32_t computed = 0;
  // Copies to land before the sequence may run (swap-in, copy on write,
  // blocks still being swapped out of); 0 once they have.
  uint64_t ready_ticket = 0;
  uint64_t swap_in_ticket = 0;  // timed for the summary
  std::chrono::steady_clock::time_point admitted;  // swap-in planned
  Phase phase = Phase::kPrefill;
  std::optional<Sampler> sampler;
  std::optional<StreamingDetokenizer> detok;
  std::optional<StopMatcher> stop;
  absl::Status final_status;
  TurnResult result;
  bool first_token = true;
  bool done = false;  // finish at the end of this step
};

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
  CallAsync<BlocksOr>([this, id] { return DoDeleteSession(id); },
                      std::move(done), Stopped());
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
  return CallSync<BlocksOr>([&] { return DoDeleteSession(id); }, Stopped());
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
        if (!store_->Contains(id)) {
          return absl::NotFoundError(
              absl::StrCat("session '", id, "' not found"));
        }
        return store_->tokens(id);
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
      cv_.wait(lock, [&] {
        return stopping_ || !queue_.empty() || AnyReady();
      });
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
        Finish(*seq, absl::CancelledError("the server is shutting down"));
      }
      active_.clear();
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
    store_->ExpireIdle();
    FlushCopies();
    if (!active_.empty()) Step();
    if (options_.check_invariants) KVS_CHECK_OK(store_->CheckInvariants());
  }
}

void Engine::Admit(std::unique_ptr<Sequence> seq) {
  TurnRequest& req = seq->req;
  const ModelConfig& c = bundle_->model->config();
  seq->result.session_id = req.session_id;
  seq->anonymous = req.session_id.empty() || !req.use_cache;
  seq->store_id = seq->anonymous
                      ? absl::StrCat("\x01turn-", ++anonymous_counter_)
                      : req.session_id;

  // Build the full token sequence of this turn.
  std::vector<int32_t> tokens;
  if (req.append && !req.session_id.empty()) {
    // The no-cache baseline reads the history but never changes it.
    if (store_->Contains(req.session_id)) {
      tokens = store_->tokens(req.session_id);
    } else if (!req.create_session) {
      seq->observer->OnDone(
          absl::NotFoundError(absl::StrCat("session '", req.session_id,
                                           "' does not exist")),
          seq->result);
      return;
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
  if (tokens.empty()) {
    seq->observer->OnDone(absl::InvalidArgumentError("the prompt is empty"),
                          seq->result);
    return;
  }
  if (tokens.size() >= static_cast<size_t>(c.context_length)) {
    seq->observer->OnDone(
        absl::OutOfRangeError(absl::StrCat(
            "the prompt has ", tokens.size(),
            " tokens; the context window is ", c.context_length,
            " and at least one token must be generated")),
        seq->result);
    return;
  }
  // Before the swap-in is planned: the worker may land it at once.
  seq->admitted = std::chrono::steady_clock::now();
  absl::StatusOr<session_store::TurnPlan> plan =
      store_->BeginTurn(seq->store_id, tokens,
                        seq->anonymous || req.create_session,
                        seq->anonymous ? std::nullopt : req.pin,
                        /*share=*/req.use_cache);
  FlushCopies();
  if (!plan.ok()) {
    seq->observer->OnDone(plan.status(), seq->result);
    return;
  }
  seq->tokens = std::move(tokens);
  seq->computed = plan->reused_tokens;
  seq->ready_ticket = plan->ready_ticket;
  if (plan->swapped_in_blocks > 0) seq->swap_in_ticket = plan->ready_ticket;
  seq->result.prompt_tokens = static_cast<int32_t>(seq->tokens.size());
  seq->result.cached_tokens = plan->reused_tokens;
  if (plan->recomputed) {
    seq->result.cached_tier = CacheTier::kRecomputed;
    ++stats_.recomputed_turns;
  } else if (plan->reused_from == session_store::Tier::kHost) {
    seq->result.cached_tier = CacheTier::kHost;
    ++stats_.swap_in_turns;
  } else {
    seq->result.cached_tier =
        plan->reused_tokens > 0 ? CacheTier::kDevice : CacheTier::kNone;
  }
  seq->result.prefilled_tokens =
      seq->result.prompt_tokens - seq->result.cached_tokens;
  stats_.prompt_tokens += seq->result.prompt_tokens;
  if (plan->reused_from == session_store::Tier::kHost) {
    stats_.cached_tokens_host += seq->result.cached_tokens;
  } else {
    stats_.cached_tokens_device += seq->result.cached_tokens;
  }
  seq->sampler.emplace(req.sampling);
  seq->detok.emplace(*bundle_->tokenizer);
  seq->stop.emplace(req.stop);
  seq->phase = Sequence::Phase::kPrefill;
  active_.push_back(std::move(seq));
}

bool Engine::Step() {
  using Phase = Sequence::Phase;
  const absl::Time now = clock_->Now();
  // Cancellation and deadlines: the tokens already streamed stay in the
  // session, so a decoding sequence still flushes its last token's KV.
  for (auto& s : active_) {
    Sequence& seq = *s;
    if (seq.done || !(seq.handle->cancelled() || now > seq.req.deadline)) {
      continue;
    }
    seq.final_status = seq.handle->cancelled()
                           ? absl::CancelledError("cancelled by the client")
                           : absl::DeadlineExceededError("deadline exceeded");
    seq.result.cancelled = true;
    if (seq.phase == Phase::kDecode && !seq.anonymous) {
      seq.phase = Phase::kFlush;
    } else if (seq.phase != Phase::kFlush) {
      seq.done = true;
    }
  }

  // Decode and flush tokens first, then prefill chunks in arrival order.
  struct Part {
    Sequence* seq;
    int32_t n;
    LogitsMode logits;
  };
  std::vector<Part> parts;
  int32_t budget = options_.max_batch_tokens;
  bool waiting_for_copies = false;
  Sequence* newest_blocked = nullptr;
  absl::Status blocked_status;
  for (int pass = 0; pass < 2; ++pass) {
    for (auto& s : active_) {
      Sequence& seq = *s;
      const bool decoding = seq.phase != Phase::kPrefill;
      if (seq.done || (pass == 0) != decoding || budget == 0) continue;
      if (!Ready(seq)) {
        waiting_for_copies = true;
        continue;
      }
      const int32_t remaining =
          static_cast<int32_t>(seq.tokens.size()) - seq.computed;
      const int32_t n = std::min(remaining, budget);
      if (n <= 0) continue;
      absl::StatusOr<uint64_t> fence =
          store_->Reserve(seq.store_id, seq.computed + n);
      if (!fence.ok()) {
        if (seq.phase == Phase::kFlush) {
          // A flush that finds no room only loses the last token's KV; the
          // next turn recomputes it.
          seq.done = true;
        } else {
          // Only running sequences hold the device: wait for them.
          newest_blocked = &seq;
          blocked_status = fence.status();
        }
        continue;
      }
      if (*fence != 0) {
        // The new blocks are still being copied out of.
        seq.ready_ticket = *fence;
        if (!Ready(seq)) {
          waiting_for_copies = true;
          continue;
        }
      }
      const bool last = n == remaining;
      parts.push_back({&seq, n,
                       seq.phase == Phase::kFlush || !last ? LogitsMode::kNone
                                                           : LogitsMode::kLast});
      budget -= n;
    }
  }
  FlushCopies();
  if (parts.empty() && !waiting_for_copies && newest_blocked != nullptr) {
    // Nothing runs that could free blocks: the newest blocked turn gives
    // up, so that the others can proceed.
    newest_blocked->final_status = blocked_status;
    newest_blocked->done = true;
  }
  std::vector<SequenceChunk> chunks;
  chunks.reserve(parts.size());
  for (const Part& p : parts) {
    SequenceChunk c;
    c.tokens = std::span<const int32_t>(p.seq->tokens)
                   .subspan(p.seq->computed, p.n);
    c.start_pos = p.seq->computed;
    c.block_table = store_->block_table(p.seq->store_id);
    c.logits = p.logits;
    chunks.push_back(c);
  }
  // Each logits row is sampled where its logits are when the backend can
  // (only token ids cross the bus), else on the host.
  const bool device_sampling = bundle_->backend->samples_on_device();
  row_sampling_.clear();
  if (device_sampling) {
    for (const Part& p : parts) {
      if (p.logits != LogitsMode::kLast) continue;
      RowSampling rs;
      rs.on_device = p.seq->sampler->DeviceSamplable();
      if (rs.on_device) rs.row = p.seq->sampler->NextDeviceRow();
      row_sampling_.push_back(rs);
    }
  }
  if (!chunks.empty()) {
    absl::Status st =
        device_sampling
            ? bundle_->model->ForwardSampled(chunks, kv_, row_sampling_,
                                             &sampled_, &logits_)
            : bundle_->model->Forward(chunks, kv_, &logits_);
    KVS_CHECK(st.ok()) << "forward failed on validated input: " << st;
  }

  const int32_t vocab = bundle_->model->config().vocab_size;
  size_t row = 0;          // in logits_ (host-sampled rows)
  size_t sampled_row = 0;  // in row_sampling_ / sampled_
  for (const Part& p : parts) {
    Sequence& seq = *p.seq;
    KVS_CHECK_OK(store_->Commit(
        seq.store_id,
        std::span<const int32_t>(seq.tokens).subspan(seq.computed, p.n)));
    seq.computed += p.n;
    if (seq.phase == Phase::kFlush) {
      seq.done = true;
      continue;
    }
    if (p.logits != LogitsMode::kLast) continue;
    int32_t token;
    if (device_sampling && row_sampling_[sampled_row].on_device) {
      token = sampled_[sampled_row++];
    } else {
      if (device_sampling) ++sampled_row;
      const std::span<const float> row_logits(logits_.data() + row * vocab,
                                              vocab);
      ++row;
      token = seq.sampler->Sample(row_logits, seq.tokens);
    }
    seq.tokens.push_back(token);
    ++seq.result.generated_tokens;
    ++stats_.generated_tokens;
    EmitToken(seq, token);
  }
  for (auto& s : active_) {
    if (s->done) {
      Finish(*s, s->final_status);
      s.reset();
    }
  }
  std::erase_if(active_, [](const auto& s) { return s == nullptr; });
  return true;
}

void Engine::EmitToken(Sequence& seq, int32_t token) {
  const ModelConfig& c = bundle_->model->config();
  const TurnRequest& req = seq.req;
  const bool eog =
      !req.ignore_eos && bundle_->tokenizer->IsEndOfGeneration(token);
  std::string text;
  if (!eog) text = seq.stop->Push(seq.detok->Push(token));
  if (seq.first_token) {
    seq.first_token = false;
    seq.result.ttft_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                      seq.start)
            .count();
  }
  std::optional<FinishReason> finish;
  if (eog || seq.stop->stopped()) {
    finish = FinishReason::kStop;
  } else if (seq.result.generated_tokens >= req.max_tokens) {
    finish = FinishReason::kLength;
  } else if (seq.tokens.size() >= static_cast<size_t>(c.context_length)) {
    finish = FinishReason::kContext;
  }
  if (finish.has_value() && !seq.stop->stopped()) {
    text += seq.stop->Push(seq.detok->Flush());
    if (!seq.stop->stopped()) text += seq.stop->Flush();
  }
  const int32_t one[] = {token};
  seq.observer->OnDelta(text, one);
  if (finish.has_value()) {
    seq.result.finish = *finish;
    // The last token's KV is computed in one more step (flush) so that the
    // next turn continues from a complete history.
    seq.phase = Sequence::Phase::kFlush;
    if (seq.anonymous) seq.done = true;
    return;
  }
  seq.phase = Sequence::Phase::kDecode;
  if (!req.use_cache) {
    // No-cache baseline: forget all KV and recompute everything next step.
    store_->EndTurn(seq.store_id);
    KVS_CHECK_OK(store_->Delete(seq.store_id));
    absl::StatusOr<session_store::TurnPlan> plan =
        store_->BeginTurn(seq.store_id, seq.tokens, /*create_if_missing=*/true,
                          std::nullopt, /*share=*/false);
    if (!plan.ok()) {
      seq.final_status = plan.status();
      seq.done = true;
      return;
    }
    seq.computed = 0;
    seq.phase = Sequence::Phase::kPrefill;
  }
}

void Engine::Finish(Sequence& seq, const absl::Status& status) {
  if (seq.anonymous) {
    store_->EndTurn(seq.store_id);
    (void)store_->Delete(seq.store_id);
    seq.result.session_tokens = 0;
  } else {
    store_->EndTurn(seq.store_id);
    seq.result.session_tokens = seq.computed;
  }
  seq.result.total_seconds = std::chrono::duration<double>(
                                 std::chrono::steady_clock::now() - seq.start)
                                 .count();
  ++stats_.turns;
  seq.observer->OnDone(status, seq.result);
}

}  // namespace kvsession::runtime
