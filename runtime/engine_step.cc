// One engine step: a scheduler that decides (cancellations, the batch), a
// runner that executes (the forward pass), and an output stage that samples,
// streams and ends generations. What a turn leaves in its session is decided
// in one place, Engine::Finish (engine.cc).
#include <algorithm>
#include <chrono>
#include <span>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"
#include "runtime/engine.h"
#include "runtime/engine_internal.h"

namespace kvsession::runtime {

void Engine::Step() {
  CheckCancellations();
  const std::vector<Part> parts = Schedule();
  Run(parts);
  Output(parts);
  for (auto& s : active_) {
    if (s->done) {
      Finish(*s, s->final_status);
      s.reset();
    }
  }
  std::erase_if(active_, [](const auto& s) { return s == nullptr; });
}

void Engine::CheckCancellations() {
  const absl::Time now = clock_->Now();
  for (auto& s : active_) {
    Sequence& seq = *s;
    if (seq.done || seq.result.cancelled || !seq.Interrupted(now)) continue;
    Interrupt(seq, seq.handle->cancelled()
                       ? absl::CancelledError("cancelled by the client")
                       : absl::DeadlineExceededError("deadline exceeded"));
  }
}

void Engine::Interrupt(Sequence& seq, absl::Status why) {
  seq.final_status = std::move(why);
  seq.result.cancelled = true;
  // The session keeps exactly what the client was sent.
  const int32_t sent = seq.observer->Seal();
  EndGeneration(seq, std::min(seq.keep.value_or(seq.delivered), sent));
}

void Engine::EndGeneration(Sequence& seq, int32_t generated) {
  seq.keep = generated;
  seq.tokens.resize(seq.prompt_len + generated);
  seq.result.generated_tokens = generated;
  // A turn that is kept continues from a complete history next time: the
  // last kept token's KV is computed in one more step (flush). One that is
  // undone (nothing sent) needs none.
  const bool kept = seq.final_status.ok() || generated > 0;
  if (!seq.anonymous && kept &&
      seq.computed < static_cast<int32_t>(seq.tokens.size())) {
    seq.phase = Sequence::Phase::kFlush;
  } else {
    seq.done = true;
  }
}

std::vector<Engine::Part> Engine::Schedule() {
  using Phase = Sequence::Phase;
  // Decode and flush tokens first, then prefill chunks in arrival order.
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
          // A flush that finds no room only leaves the last token without
          // KV; it stays in the history and the next turn computes it.
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
  return parts;
}

void Engine::Run(const std::vector<Part>& parts) {
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
  if (chunks.empty()) return;
  absl::Status st =
      device_sampling
          ? bundle_->model->ForwardSampled(chunks, kv_, row_sampling_,
                                           &sampled_, &logits_)
          : bundle_->model->Forward(chunks, kv_, &logits_);
  KVS_CHECK(st.ok()) << "forward failed on validated input: " << st;
}

void Engine::Output(const std::vector<Part>& parts) {
  const bool device_sampling = bundle_->backend->samples_on_device();
  const int32_t vocab = bundle_->model->config().vocab_size;
  size_t row = 0;          // in logits_ (host-sampled rows)
  size_t sampled_row = 0;  // in row_sampling_ / sampled_
  for (const Part& p : parts) {
    Sequence& seq = *p.seq;
    KVS_CHECK_OK(store_->Commit(
        seq.store_id,
        std::span<const int32_t>(seq.tokens).subspan(seq.computed, p.n)));
    seq.computed += p.n;
    if (seq.phase == Sequence::Phase::kFlush) {
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
    ++stats_.generated_tokens;
    EmitToken(seq, token);
  }
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
  const int32_t sampled = static_cast<int32_t>(seq.tokens.size()) -
                          seq.prompt_len;
  std::optional<FinishReason> finish;
  if (eog || seq.stop->stopped()) {
    finish = FinishReason::kStop;
  } else if (seq.tokens.size() >= static_cast<size_t>(c.context_length)) {
    finish = FinishReason::kContext;
  } else if (sampled >= seq.max_tokens) {
    finish = FinishReason::kLength;
  }
  const bool stopped = seq.stop->stopped();
  if (finish.has_value() && !stopped) {
    text += seq.stop->Push(seq.detok->Flush());
    if (!seq.stop->stopped()) text += seq.stop->Flush();
  }
  seq.reply += text;
  // Which sampled tokens are now out whole: those whose text ends within
  // the reply. At the end without a stop string, all of them; tokens of a
  // stop string never are.
  const int64_t out = static_cast<int64_t>(seq.reply.size());
  seq.pending_ends.push_back(
      seq.stop->stopped()
          ? std::numeric_limits<int64_t>::max()
          : out + static_cast<int64_t>(seq.detok->pending_bytes() +
                                       seq.stop->held_bytes()));
  size_t n = 0;
  if (finish.has_value() && !seq.stop->stopped()) {
    n = seq.pending_ends.size();
  } else {
    while (n < seq.pending_ends.size() && seq.pending_ends[n] <= out) ++n;
  }
  if (n > 0 || !text.empty()) {
    const size_t first = seq.prompt_len + seq.delivered;
    seq.observer->OnDelta(
        text, std::span<const int32_t>(seq.tokens).subspan(first, n));
    seq.delivered += static_cast<int32_t>(n);
    seq.reply_at.insert(seq.reply_at.end(), n, seq.reply.size());
    seq.pending_ends.erase(seq.pending_ends.begin(),
                           seq.pending_ends.begin() + n);
  }
  if (finish.has_value()) {
    seq.result.finish = *finish;
    EndGeneration(seq, seq.delivered);
    return;
  }
  seq.phase = Sequence::Phase::kDecode;
  if (!req.use_cache) {
    // No-cache baseline: forget all KV and recompute everything next step.
    store_->AbortTurn(seq.store_id);
    absl::StatusOr<session_store::TurnPlan> plan = store_->BeginTurn(
        seq.store_id, seq.tokens, /*create_if_missing=*/true, std::nullopt,
        /*share=*/false, /*ephemeral=*/true);
    if (!plan.ok()) {
      seq.opened = false;
      seq.final_status = plan.status();
      seq.done = true;
      return;
    }
    seq.computed = 0;
    seq.phase = Sequence::Phase::kPrefill;
  }
}

}  // namespace kvsession::runtime
