#include "tests/service/test_server.h"

#include "kernels/check.h"
#include "tests/runtime/tiny_model.h"

namespace kvsession::testing {

TestServer::TestServer(TestServerOptions options) {
  runtime::ModelBundle::Options load;
  load.path = options.model_path.empty() ? TinyModelPath() : options.model_path;
  load.n_threads = options.threads;
  load.device = options.device;
  absl::StatusOr<std::unique_ptr<runtime::ModelBundle>> bundle =
      runtime::ModelBundle::Load(load);
  KVS_CHECK_OK(bundle.status());
  bundle_ = *std::move(bundle);
  options.engine.check_invariants = true;
  absl::StatusOr<std::unique_ptr<runtime::Engine>> engine =
      runtime::Engine::Create(bundle_.get(), options.engine);
  KVS_CHECK_OK(engine.status());
  engine_ = *std::move(engine);
  options.service.log_turns = false;
  service_ = std::make_unique<service::KvSessionService>(engine_.get(),
                                                         options.service);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port_);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  KVS_CHECK(server_ != nullptr && port_ != 0);
  channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                 grpc::InsecureChannelCredentials());
  stub_ = v1::KvSession::NewStub(channel_);
}

TestServer::~TestServer() {
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  engine_->Stop();
  server_->Wait();
}

std::unique_ptr<v1::KvSession::Stub> TestServer::NewStub() {
  return v1::KvSession::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(port_), grpc::InsecureChannelCredentials()));
}

namespace {

template <typename Reader>
TurnOutput Drain(Reader& reader) {
  TurnOutput out;
  v1::ChatEvent ev;
  while (reader->Read(&ev)) {
    if (ev.has_delta()) {
      out.text += ev.delta().text();
      out.tokens.insert(out.tokens.end(), ev.delta().token_ids().begin(),
                        ev.delta().token_ids().end());
    } else if (ev.has_summary()) {
      out.summary = ev.summary();
      out.has_summary = true;
    }
  }
  out.status = reader->Finish();
  return out;
}

}  // namespace

TurnOutput RunChat(v1::KvSession::Stub& stub, const v1::ChatRequest& request) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto reader = stub.Chat(&ctx, request);
  return Drain(reader);
}

TurnOutput RunComplete(v1::KvSession::Stub& stub,
                       const v1::CompleteRequest& request) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto reader = stub.Complete(&ctx, request);
  return Drain(reader);
}

v1::ChatRequest UserTurn(const std::string& session, const std::string& text,
                         int max_tokens) {
  v1::ChatRequest r;
  r.set_session_id(session);
  r.set_mode(v1::HISTORY_MODE_APPEND);
  v1::Message* m = r.add_messages();
  m->set_role("user");
  m->set_content(text);
  r.set_max_tokens(max_tokens);
  return r;
}

}  // namespace kvsession::testing
