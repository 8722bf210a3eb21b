// An in-process kvsession server on loopback for integration tests, with a
// real gRPC client stub.
#ifndef KVSESSION_TESTS_SERVICE_TEST_SERVER_H_
#define KVSESSION_TESTS_SERVICE_TEST_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "kvsession/v1/kvsession.grpc.pb.h"
#include "runtime/engine.h"
#include "runtime/model_bundle.h"
#include "service/kvsession_service.h"

namespace kvsession::testing {

struct TestServerOptions {
  std::string model_path;  // empty: the tiny test model
  runtime::Engine::Options engine;
  service::KvSessionService::Options service;
  int threads = 1;  // results do not depend on it (batch invariance)
  std::string device = "cpu";  // kernels/backend_factory.h
};

class TestServer {
 public:
  explicit TestServer(TestServerOptions options = {});
  ~TestServer();

  v1::KvSession::Stub& stub() { return *stub_; }
  std::unique_ptr<v1::KvSession::Stub> NewStub();
  runtime::ModelBundle& bundle() { return *bundle_; }
  runtime::Engine& engine() { return *engine_; }
  service::KvSessionService& service() { return *service_; }
  int port() const { return port_; }

 private:
  std::unique_ptr<runtime::ModelBundle> bundle_;
  std::unique_ptr<runtime::Engine> engine_;
  std::unique_ptr<service::KvSessionService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::KvSession::Stub> stub_;
  int port_ = 0;
};

// A finished streaming call.
struct TurnOutput {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::string text;
  v1::TurnSummary summary;
  bool has_summary = false;
};

TurnOutput RunChat(v1::KvSession::Stub& stub, const v1::ChatRequest& request);
TurnOutput RunComplete(v1::KvSession::Stub& stub,
                       const v1::CompleteRequest& request);

v1::ChatRequest UserTurn(const std::string& session, const std::string& text,
                         int max_tokens);

}  // namespace kvsession::testing

#endif  // KVSESSION_TESTS_SERVICE_TEST_SERVER_H_
