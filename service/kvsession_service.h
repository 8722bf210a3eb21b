// The gRPC service (callback API). Handlers validate, tokenize and enqueue
// turns on the engine; the engine thread streams events back through a
// reactor per call.
#ifndef KVSESSION_SERVICE_KVSESSION_SERVICE_H_
#define KVSESSION_SERVICE_KVSESSION_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "kvsession/v1/kvsession.grpc.pb.h"
#include "runtime/engine.h"
#include "service/metrics.h"
#include "service/request_validation.h"

namespace kvsession::service {

// Trailing metadata of a Chat or Complete stream that ends with an error
// after its turn ran: the serialized TurnSummary.
inline constexpr char kSummaryTrailer[] = "kvsession-turn-summary-bin";

// One structured line per finished turn.
struct TurnLogLine {
  std::string rpc;
  const runtime::TurnResult* result;
  const absl::Status* status;
};

// Every method on raw bytes (service/raw_messages.h says why).
using RawKvSessionService = v1::KvSession::WithRawCallbackMethod_Chat<
    v1::KvSession::WithRawCallbackMethod_Complete<
        v1::KvSession::WithRawCallbackMethod_GetSession<
            v1::KvSession::WithRawCallbackMethod_ListSessions<
                v1::KvSession::WithRawCallbackMethod_DeleteSession<
                    v1::KvSession::WithRawCallbackMethod_GetServerInfo<
                        v1::KvSession::Service>>>>>>;

// A unary call: the parsed request, the response to fill, and where its
// bytes go.
template <typename Request, typename Response>
struct UnaryCall {
  grpc::ServerUnaryReactor* reactor = nullptr;
  const char* rpc = "";
  absl::Time start;
  Request request;
  Response response;
  grpc::ByteBuffer* out = nullptr;
};

class KvSessionService final : public RawKvSessionService {
 public:
  struct Options {
    ValidationLimits limits;
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

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Chat(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Complete(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;

 private:
  absl::StatusOr<runtime::TurnRequest> BuildChatTurn(
      const v1::ChatRequest& r) const;
  absl::StatusOr<runtime::TurnRequest> BuildCompleteTurn(
      const v1::CompleteRequest& r) const;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* StartTurn(
      grpc::CallbackServerContext* context, const char* rpc,
      absl::StatusOr<runtime::TurnRequest> turn);
  // Parses the request and runs `handler`, or fails the call.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Unary(
      grpc::CallbackServerContext* context, const char* rpc,
      const grpc::ByteBuffer* in, grpc::ByteBuffer* out,
      void (KvSessionService::*handler)(
          std::shared_ptr<UnaryCall<Request, Response>>));
  template <typename Request, typename Response>
  void FinishUnary(const UnaryCall<Request, Response>& call,
                   const absl::Status& status) const;
  void DoGetSession(
      std::shared_ptr<UnaryCall<v1::GetSessionRequest, v1::SessionInfo>> c);
  void DoListSessions(std::shared_ptr<
                      UnaryCall<v1::ListSessionsRequest, v1::ListSessionsResponse>>
                          c);
  void DoDeleteSession(
      std::shared_ptr<
          UnaryCall<v1::DeleteSessionRequest, v1::DeleteSessionResponse>>
          c);
  void DoGetServerInfo(
      std::shared_ptr<UnaryCall<v1::GetServerInfoRequest, v1::ServerInfo>> c);
  void FillSessionInfo(const session_store::SessionInfo& in,
                       v1::SessionInfo* out) const;

  runtime::Engine* engine_;
  runtime::ModelBundle* bundle_;
  Options options_;
  std::atomic<bool> draining_{false};
};

}  // namespace kvsession::service

#endif  // KVSESSION_SERVICE_KVSESSION_SERVICE_H_
