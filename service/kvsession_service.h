// The gRPC service (callback API). Handlers validate, tokenize and enqueue
// turns on the engine; the engine thread streams events back through a
// reactor per call.
#ifndef KVSESSION_SERVICE_KVSESSION_SERVICE_H_
#define KVSESSION_SERVICE_KVSESSION_SERVICE_H_

#include <atomic>
#include <string>

#include "absl/time/time.h"
#include "kvsession/v1/kvsession.grpc.pb.h"
#include "runtime/engine.h"
#include "service/metrics.h"
#include "service/request_validation.h"

namespace kvsession::service {

// One structured line per finished turn.
struct TurnLogLine {
  std::string rpc;
  const runtime::TurnResult* result;
  const absl::Status* status;
};

class KvSessionService final : public v1::KvSession::CallbackService {
 public:
  struct Options {
    ValidationLimits limits;
    int32_t default_max_tokens = 256;
    std::string model_path;
    bool log_turns = true;
    // Not owned; null records no metrics.
    Metrics* metrics = nullptr;
    // While draining, a stream's status goes out this long after its last
    // message. gRPC closes a drained connection as soon as its last stream
    // ends; a flow-control update the client sends while reading the last
    // messages then meets a closed socket, and the reset it draws makes the
    // client's kernel discard what it has not read yet: the summary and the
    // status. The pause lets those updates arrive while the connection is
    // still open. It costs nothing outside a drain.
    absl::Duration drain_finish_delay = absl::Milliseconds(200);
  };
  KvSessionService(runtime::Engine* engine, const Options& options);

  // Called when shutdown begins (before grpc::Server::Shutdown): streams
  // that end from now on use drain_finish_delay.
  void BeginDrain() { draining_.store(true); }

  grpc::ServerWriteReactor<v1::ChatEvent>* Chat(
      grpc::CallbackServerContext* context,
      const v1::ChatRequest* request) override;
  grpc::ServerWriteReactor<v1::ChatEvent>* Complete(
      grpc::CallbackServerContext* context,
      const v1::CompleteRequest* request) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const v1::GetSessionRequest* request,
                                       v1::SessionInfo* response) override;
  grpc::ServerUnaryReactor* ListSessions(
      grpc::CallbackServerContext* context,
      const v1::ListSessionsRequest* request,
      v1::ListSessionsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteSession(
      grpc::CallbackServerContext* context,
      const v1::DeleteSessionRequest* request,
      v1::DeleteSessionResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(
      grpc::CallbackServerContext* context,
      const v1::GetServerInfoRequest* request,
      v1::ServerInfo* response) override;

 private:
  absl::StatusOr<runtime::TurnRequest> BuildChatTurn(
      const v1::ChatRequest& r) const;
  absl::StatusOr<runtime::TurnRequest> BuildCompleteTurn(
      const v1::CompleteRequest& r) const;
  grpc::ServerWriteReactor<v1::ChatEvent>* StartTurn(
      grpc::CallbackServerContext* context, const char* rpc,
      absl::StatusOr<runtime::TurnRequest> turn);
  // Records a unary RPC's outcome, then finishes it.
  void FinishUnary(grpc::ServerUnaryReactor* reactor, const char* rpc,
                   absl::Time start, const grpc::Status& status) const;
  void FillSessionInfo(const session_store::SessionInfo& in,
                       v1::SessionInfo* out) const;

  runtime::Engine* engine_;
  runtime::ModelBundle* bundle_;
  Options options_;
  std::atomic<bool> draining_{false};
};

}  // namespace kvsession::service

#endif  // KVSESSION_SERVICE_KVSESSION_SERVICE_H_
