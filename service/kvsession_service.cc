#include "service/kvsession_service.h"

#include <cstdio>
#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "grpcpp/alarm.h"
#include "service/raw_messages.h"
#include "service/status_util.h"

namespace kvsession::service {
namespace {

v1::CacheTier ToProto(runtime::CacheTier t) {
  switch (t) {
    case runtime::CacheTier::kDevice:
      return v1::CACHE_TIER_DEVICE;
    case runtime::CacheTier::kHost:
      return v1::CACHE_TIER_HOST;
    case runtime::CacheTier::kRecomputed:
      return v1::CACHE_TIER_RECOMPUTED;
    case runtime::CacheTier::kNone:
      break;
  }
  return v1::CACHE_TIER_UNSPECIFIED;
}

v1::FinishReason ToProto(const runtime::TurnResult& r) {
  if (r.cancelled) return v1::FINISH_REASON_CANCELLED;
  switch (r.finish) {
    case runtime::FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case runtime::FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case runtime::FinishReason::kContext:
      return v1::FINISH_REASON_CONTEXT;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void FillSummary(const runtime::TurnResult& r, v1::TurnSummary* s) {
  s->set_session_id(r.session_id);
  s->set_finish_reason(ToProto(r));
  s->set_prompt_tokens(r.prompt_tokens);
  s->set_cached_tokens(r.cached_tokens);
  s->set_cached_tier(ToProto(r.cached_tier));
  s->set_prefilled_tokens(r.prefilled_tokens);
  s->set_generated_tokens(r.generated_tokens);
  s->set_time_to_first_token_seconds(r.ttft_seconds);
  s->set_total_seconds(r.total_seconds);
  s->set_swap_in_seconds(r.swap_in_seconds);
  s->set_session_tokens(r.session_tokens);
}

void LogTurn(const char* rpc, const absl::Status& status,
             const runtime::TurnResult& r) {
  // One line per turn, key=value, for log pipelines.
  std::fprintf(stderr,
               "turn rpc=%s session=%s code=%s prompt=%d reused=%d "
               "prefilled=%d generated=%d ttft_ms=%.1f total_ms=%.1f "
               "finish=%s\n",
               rpc, r.session_id.empty() ? "-" : r.session_id.c_str(),
               absl::StatusCodeToString(status.code()).c_str(),
               r.prompt_tokens, r.cached_tokens, r.prefilled_tokens,
               r.generated_tokens, r.ttft_seconds * 1e3, r.total_seconds * 1e3,
               runtime::FinishReasonName(r.finish));
}

// Streams one turn. It is the engine's observer too: the engine calls
// OnDelta/OnDone on its thread, gRPC calls OnWriteDone/OnCancel/OnDone on
// its own. The reactor deletes itself in OnDone(), which gRPC calls only
// after Finish(), which we call only after the engine's OnDone, so the
// engine never sees a dead observer.
class TurnReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                          public runtime::TurnObserver {
 public:
  // While *draining is true, the status follows the last message after
  // drain_delay (KvSessionService::Options::drain_finish_delay).
  TurnReactor(grpc::CallbackServerContext* context, const char* rpc, bool log,
              Metrics* metrics, const std::atomic<bool>* draining,
              absl::Duration drain_delay)
      : context_(context),
        rpc_(rpc),
        log_(log),
        metrics_(metrics),
        draining_(draining),
        drain_delay_(drain_delay),
        start_(absl::Now()) {}

  void Begin(runtime::Engine* engine, runtime::TurnRequest request) {
    // The engine holds a non-owning shared_ptr: the reactor's lifetime is
    // gRPC's (see above).
    handle_ = engine->Submit(
        std::move(request),
        std::shared_ptr<runtime::TurnObserver>(this, [](auto*) {}));
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) handle_->Cancel();
  }

  void FailNow(const absl::Status& status) {
    grpc::Status st = ToGrpcStatus(status);
    RecordRequest(st);
    Finish(st);
  }

  // runtime::TurnObserver
  void OnDelta(std::string_view text,
               std::span<const int32_t> tokens) override {
    if (metrics_ != nullptr) {
      // Only the engine thread touches last_delta_.
      const absl::Time now = absl::Now();
      if (last_delta_ != absl::InfinitePast()) {
        metrics_->ObserveInterToken(absl::ToDoubleSeconds(now - last_delta_));
      }
      last_delta_ = now;
    }
    v1::ChatEvent ev;
    ev.mutable_delta()->set_text(std::string(text));
    for (int32_t t : tokens) ev.mutable_delta()->add_token_ids(t);
    Push(std::move(ev), false, grpc::Status::OK);
  }

  void OnDone(const absl::Status& status,
              const runtime::TurnResult& r) override {
    if (log_) LogTurn(rpc_, status, r);
    if (metrics_ != nullptr) metrics_->ObserveTurn(r);
    v1::ChatEvent ev;
    if (status.ok()) {
      FillSummary(r, ev.mutable_summary());
    } else if (r.prompt_tokens > 0) {
      // A turn that ran and ended early (e.g. the server shut down) still
      // reports what it did, in the trailers: a stream's messages end
      // with OK only.
      v1::TurnSummary summary;
      FillSummary(r, &summary);
      context_->AddTrailingMetadata(kSummaryTrailer,
                                    summary.SerializeAsString());
    }
    grpc::Status final_status = ToGrpcStatus(status);
    // Recorded before the client can see the end of the stream, so a
    // scrape after a finished call includes it.
    RecordRequest(final_status);
    Push(std::move(ev), true, std::move(final_status));
  }

  // grpc reactions
  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      // The client is gone: stop generating, drop what is queued.
      queue_.clear();
      if (handle_) handle_->Cancel();
    }
    Pump(lock);
  }

  int32_t Seal() override {
    std::lock_guard<std::mutex> lock(mu_);
    sealed_ = true;
    queue_.clear();  // only deltas: OnDone comes after Seal
    return sent_tokens_;
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    if (handle_) handle_->Cancel();
  }

  void OnDone() override { delete this; }

 private:
  void RecordRequest(const grpc::Status& status) {
    if (metrics_ == nullptr) return;
    metrics_->ObserveRequest(rpc_, status.error_code(),
                             absl::ToDoubleSeconds(absl::Now() - start_));
  }

  void Push(v1::ChatEvent ev, bool last, grpc::Status final_status) {
    std::unique_lock<std::mutex> lock(mu_);
    const bool dropped =
        cancelled_ || (sealed_ && ev.event_case() == v1::ChatEvent::kDelta);
    if (ev.event_case() != v1::ChatEvent::EVENT_NOT_SET && !dropped) {
      queue_.push_back(std::move(ev));
    }
    if (last) {
      engine_done_ = true;
      final_ = std::move(final_status);
    }
    Pump(lock);
  }

  // Starts the next write, or finishes once everything is written. gRPC
  // calls are made without holding mu_ in case a reaction runs inline.
  void Pump(std::unique_lock<std::mutex>& lock) {
    if (writing_ || finished_) return;
    if (!queue_.empty()) {
      writing_ = true;
      // Handed to gRPC: sent, as far as the session is concerned (Seal).
      sent_tokens_ += queue_.front().delta().token_ids_size();
      SerializeResponse(queue_.front(), &current_);
      queue_.pop_front();
      lock.unlock();
      StartWrite(&current_);
      return;
    }
    if (engine_done_) {
      finished_ = true;
      grpc::Status st = final_;
      const bool delay = draining_->load() && !cancelled_ &&
                         drain_delay_ > absl::ZeroDuration();
      lock.unlock();
      if (delay) {
        // The reactor lives until OnDone, which follows this Finish.
        finish_alarm_.Set(absl::ToChronoTime(absl::Now() + drain_delay_),
                          [this, st](bool) { Finish(st); });
      } else {
        Finish(st);
      }
    }
  }

  grpc::CallbackServerContext* context_;
  const char* rpc_;
  bool log_;
  Metrics* metrics_;
  const std::atomic<bool>* draining_;
  const absl::Duration drain_delay_;
  const absl::Time start_;
  absl::Time last_delta_ = absl::InfinitePast();
  std::shared_ptr<runtime::TurnHandle> handle_;
  std::mutex mu_;
  std::deque<v1::ChatEvent> queue_;
  grpc::ByteBuffer current_;
  bool writing_ = false;
  bool engine_done_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
  bool sealed_ = false;
  int32_t sent_tokens_ = 0;
  grpc::Status final_;
  grpc::Alarm finish_alarm_;
};

// The generation fields ChatRequest and CompleteRequest share.
template <typename Request>
absl::Status FillGeneration(const Request& r, runtime::TurnRequest* t) {
  absl::StatusOr<runtime::SamplingParams> sp = ToSamplingParams(r.sampling());
  if (!sp.ok()) return sp.status();
  t->sampling = *sp;
  t->max_tokens = r.max_tokens();  // 0: the engine's default
  t->stop.assign(r.stop().begin(), r.stop().end());
  t->ignore_eos = r.ignore_eos();
  t->use_cache = !r.has_use_cache() || r.use_cache();
  if (r.has_pin()) t->pin = r.pin();
  return absl::OkStatus();
}

absl::Time DeadlineOf(grpc::CallbackServerContext* context) {
  const auto d = context->deadline();
  if (d == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(d);
}

}  // namespace

KvSessionService::KvSessionService(runtime::Engine* engine,
                                   const Options& options)
    : engine_(engine), bundle_(engine->bundle()), options_(options) {
  options_.limits.vocab_size = bundle_->model->config().vocab_size;
}

absl::StatusOr<runtime::TurnRequest> KvSessionService::BuildChatTurn(
    const v1::ChatRequest& r) const {
  if (absl::Status s = ValidateChatRequest(r, options_.limits); !s.ok()) {
    return s;
  }
  runtime::TurnRequest t;
  t.session_id = r.session_id();
  std::vector<runtime::ChatMessage> messages;
  for (const v1::Message& m : r.messages()) {
    messages.push_back({m.role(), m.content()});
  }
  t.append = r.mode() != v1::HISTORY_MODE_FULL;
  absl::StatusOr<std::vector<int32_t>> first =
      bundle_->EncodeChat(messages, /*add_generation_prompt=*/true,
                          /*first_turn=*/true);
  if (!first.ok()) return first.status();
  if (t.append) {
    absl::StatusOr<std::vector<int32_t>> next =
        bundle_->EncodeChat(messages, true, /*first_turn=*/false);
    if (!next.ok()) return next.status();
    t.tokens = *std::move(next);
    t.first_turn_tokens = *std::move(first);
    t.close_turn = bundle_->close_turn_tokens;
    t.turn_separator = bundle_->turn_separator_tokens;
  } else {
    t.tokens = *std::move(first);
  }
  t.messages.emplace();
  for (const runtime::ChatMessage& m : messages) {
    t.messages->push_back({m.role, m.content});
  }
  if (absl::Status st = FillGeneration(r, &t); !st.ok()) return st;
  return t;
}

absl::StatusOr<runtime::TurnRequest> KvSessionService::BuildCompleteTurn(
    const v1::CompleteRequest& r) const {
  if (absl::Status s = ValidateCompleteRequest(r, options_.limits); !s.ok()) {
    return s;
  }
  runtime::TurnRequest t;
  t.session_id = r.session_id();
  if (r.prompt_case() == v1::CompleteRequest::kText) {
    t.tokens = bundle_->tokenizer->Encode(r.text(), /*parse_special=*/false,
                                          /*add_special=*/true);
  } else {
    t.tokens.assign(r.tokens().ids().begin(), r.tokens().ids().end());
  }
  if (absl::Status st = FillGeneration(r, &t); !st.ok()) return st;
  return t;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* KvSessionService::StartTurn(
    grpc::CallbackServerContext* context, const char* rpc,
    absl::StatusOr<runtime::TurnRequest> turn) {
  auto* reactor =
      new TurnReactor(context, rpc, options_.log_turns, options_.metrics,
                      &draining_, options_.drain_finish_delay);
  if (!turn.ok()) {
    reactor->FailNow(turn.status());
    return reactor;
  }
  turn->deadline = DeadlineOf(context);
  reactor->Begin(engine_, *std::move(turn));
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* KvSessionService::Chat(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  v1::ChatRequest r;
  absl::Status parsed = ParseRequest(*request, &r);
  return StartTurn(context, "Chat",
                   parsed.ok() ? BuildChatTurn(r)
                               : absl::StatusOr<runtime::TurnRequest>(parsed));
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* KvSessionService::Complete(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  v1::CompleteRequest r;
  absl::Status parsed = ParseRequest(*request, &r);
  return StartTurn(context, "Complete",
                   parsed.ok() ? BuildCompleteTurn(r)
                               : absl::StatusOr<runtime::TurnRequest>(parsed));
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* KvSessionService::Unary(
    grpc::CallbackServerContext* context, const char* rpc,
    const grpc::ByteBuffer* in, grpc::ByteBuffer* out,
    void (KvSessionService::*handler)(
        std::shared_ptr<UnaryCall<Request, Response>>)) {
  auto call = std::make_shared<UnaryCall<Request, Response>>();
  call->reactor = context->DefaultReactor();
  call->rpc = rpc;
  call->start = absl::Now();
  call->out = out;
  grpc::ServerUnaryReactor* reactor = call->reactor;
  if (absl::Status s = ParseRequest(*in, &call->request); !s.ok()) {
    FinishUnary(*call, s);
    return reactor;
  }
  (this->*handler)(std::move(call));
  return reactor;
}

template <typename Request, typename Response>
void KvSessionService::FinishUnary(const UnaryCall<Request, Response>& call,
                                   const absl::Status& status) const {
  const grpc::Status st = ToGrpcStatus(status);
  if (st.ok()) SerializeResponse(call.response, call.out);
  if (options_.metrics != nullptr) {
    options_.metrics->ObserveRequest(
        call.rpc, st.error_code(),
        absl::ToDoubleSeconds(absl::Now() - call.start));
  }
  call.reactor->Finish(st);
}

void KvSessionService::FillSessionInfo(const session_store::SessionInfo& in,
                                       v1::SessionInfo* out) const {
  out->set_session_id(in.id);
  switch (in.tier) {
    case session_store::Tier::kDevice:
      out->set_state(v1::SESSION_STATE_RESIDENT);
      break;
    case session_store::Tier::kHost:
      out->set_state(v1::SESSION_STATE_SWAPPED);
      break;
    case session_store::Tier::kDropped:
      out->set_state(v1::SESSION_STATE_DROPPED);
      break;
  }
  out->set_tokens(in.num_tokens);
  out->set_blocks(in.num_blocks);
  out->set_kv_bytes(in.num_blocks * engine_->kv_block_bytes());
  out->set_busy(in.busy);
  out->set_pinned(in.pinned);
  out->set_shared_blocks(in.shared_blocks);
  out->set_turns(static_cast<int32_t>(in.turns));
  out->set_idle_seconds(absl::ToDoubleSeconds(absl::Now() - in.last_used));
  for (const session_store::TranscriptMessage& m : in.transcript) {
    v1::Message* msg = out->add_messages();
    msg->set_role(m.role);
    msg->set_content(m.content);
  }
}

grpc::ServerUnaryReactor* KvSessionService::GetSession(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary(context, "GetSession", request, response,
               &KvSessionService::DoGetSession);
}

grpc::ServerUnaryReactor* KvSessionService::ListSessions(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary(context, "ListSessions", request, response,
               &KvSessionService::DoListSessions);
}

grpc::ServerUnaryReactor* KvSessionService::DeleteSession(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary(context, "DeleteSession", request, response,
               &KvSessionService::DoDeleteSession);
}

grpc::ServerUnaryReactor* KvSessionService::GetServerInfo(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary(context, "GetServerInfo", request, response,
               &KvSessionService::DoGetServerInfo);
}

void KvSessionService::DoGetSession(
    std::shared_ptr<UnaryCall<v1::GetSessionRequest, v1::SessionInfo>> c) {
  const std::string& id = c->request.session_id();
  if (absl::Status s = ValidateSessionId(id, true); !s.ok()) {
    FinishUnary(*c, s);
    return;
  }
  engine_->GetSessionAsync(id, [this, c](runtime::Engine::SessionInfoOr info) {
    if (info.ok()) FillSessionInfo(*info, &c->response);
    FinishUnary(*c, info.status());
  });
}

void KvSessionService::DoListSessions(
    std::shared_ptr<UnaryCall<v1::ListSessionsRequest, v1::ListSessionsResponse>>
        c) {
  const int32_t size =
      c->request.page_size() == 0 ? 100 : c->request.page_size();
  engine_->ListSessionsAsync(
      size, c->request.page_token(),
      [this, c](runtime::Engine::SessionPageOr page) {
        if (page.ok()) {
          for (const session_store::SessionInfo& s : page->sessions) {
            FillSessionInfo(s, c->response.add_sessions());
          }
          c->response.set_next_page_token(page->next_page_token);
        }
        FinishUnary(*c, page.status());
      });
}

void KvSessionService::DoDeleteSession(
    std::shared_ptr<
        UnaryCall<v1::DeleteSessionRequest, v1::DeleteSessionResponse>>
        c) {
  const std::string& id = c->request.session_id();
  if (absl::Status s = ValidateSessionId(id, true); !s.ok()) {
    FinishUnary(*c, s);
    return;
  }
  engine_->DeleteSessionAsync(id, [this, c](runtime::Engine::BlocksOr freed) {
    if (freed.ok()) c->response.set_freed_blocks(*freed);
    FinishUnary(*c, freed.status());
  });
}

void KvSessionService::DoGetServerInfo(
    std::shared_ptr<UnaryCall<v1::GetServerInfoRequest, v1::ServerInfo>> c) {
  engine_->StatsAsync([this, c](runtime::EngineStats stats) {
    v1::ServerInfo* response = &c->response;
    const runtime::ModelConfig& cfg = bundle_->model->config();
    response->set_model_name(cfg.name);
    response->set_model_path(options_.model_path);
    response->set_architecture(cfg.architecture);
    response->set_context_length(cfg.context_length);
    response->set_vocab_size(cfg.vocab_size);
    response->set_block_size(engine_->options().block_size);
    response->set_kv_bytes_per_token(cfg.KvBytesPerToken());
    for (session_store::Tier tier :
         {session_store::Tier::kDevice, session_store::Tier::kHost}) {
      const session_store::TierStats& t = stats.store.tier(tier);
      v1::TierInfo* ti = response->add_tiers();
      ti->set_tier(std::string(session_store::TierName(tier)));
      ti->set_capacity_bytes(t.capacity_bytes);
      ti->set_used_bytes(t.used_bytes);
      ti->set_capacity_blocks(t.capacity_blocks);
      ti->set_used_blocks(t.used_blocks);
    }
    response->set_backend(std::string(bundle_->backend->name()));
    response->set_version(KVSESSION_VERSION);
    response->set_build(KVSESSION_BUILD_INFO);
    response->set_sessions(stats.store.sessions);
    if (bundle_->chat_template.has_value()) {
      response->set_chat_template(std::string(bundle_->chat_template->name()));
    }
    FinishUnary(*c, absl::OkStatus());
  });
}

}  // namespace kvsession::service
