// Requests that are not valid protobuf get INVALID_ARGUMENT with a message
// naming the message type (and the field, for a string with invalid UTF-8),
// on every method, and touch no session. Sent as raw bytes with gRPC's
// generic stub, as a broken client would.
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/service/test_server.h"

namespace kvsession::testing {
namespace {

using ::testing::HasSubstr;

grpc::ByteBuffer Bytes(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

// One call of `method` with `request` as its bytes; reads the whole
// response stream. Returns the status.
grpc::Status Call(grpc::GenericStub& stub, const std::string& method,
                  const std::string& request) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&ctx, "/kvsession.v1.KvSession/" + method, &cq);
  void* tag;
  bool ok;
  auto next = [&] {
    EXPECT_TRUE(cq.Next(&tag, &ok)) << "completion queue shut down";
  };
  call->StartCall(reinterpret_cast<void*>(1));
  next();
  const grpc::ByteBuffer bytes = Bytes(request);
  call->WriteLast(bytes, grpc::WriteOptions(), reinterpret_cast<void*>(2));
  next();
  grpc::ByteBuffer response;
  // Up to a few reads: a stream may send messages before its status.
  for (int i = 0; i < 1000; ++i) {
    call->Read(&response, reinterpret_cast<void*>(3));
    next();
    if (!ok) break;
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  next();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// Field 1 (session_id) "s", field 2 (messages) {role "user", content as
// given}: a ChatRequest on the wire.
std::string ChatBytes(const std::string& content) {
  std::string message = std::string("\x0a\x04user", 6) + "\x12" +
                        static_cast<char>(content.size()) + content;
  return std::string("\x0a\x01s", 3) + "\x12" +
         static_cast<char>(message.size()) + message;
}

class MalformedRequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    channel_ = grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server_.port()),
        grpc::InsecureChannelCredentials());
    stub_ = std::make_unique<grpc::GenericStub>(channel_);
  }
  TestServer server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
};

TEST_F(MalformedRequestTest, ValidBytesThroughTheGenericStubWork) {
  // The helper itself is sound: a well-formed request succeeds.
  EXPECT_TRUE(Call(*stub_, "Chat", ChatBytes("hello")).ok());
}

TEST_F(MalformedRequestTest, EveryMethodAnswersInvalidArgument) {
  TurnOutput before = RunChat(server_.stub(), UserTurn("bystander", "hi", 4));
  ASSERT_TRUE(before.status.ok());
  struct Case {
    std::string method;
    std::string bytes;
    std::string type;
  };
  const std::string truncated = ChatBytes("hello").substr(0, 9);
  const std::string bad_varint = "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";
  const std::vector<Case> cases = {
      {"Chat", truncated, "kvsession.v1.ChatRequest"},
      {"Chat", bad_varint, "kvsession.v1.ChatRequest"},
      {"Complete", truncated, "kvsession.v1.CompleteRequest"},
      {"GetSession", "\x0a\x05x", "kvsession.v1.GetSessionRequest"},
      {"ListSessions", bad_varint, "kvsession.v1.ListSessionsRequest"},
      {"DeleteSession", "\x0a\x09", "kvsession.v1.DeleteSessionRequest"},
      {"GetServerInfo", "\x0b", "kvsession.v1.GetServerInfoRequest"},
  };
  for (const Case& c : cases) {
    const grpc::Status st = Call(*stub_, c.method, c.bytes);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.method << ": " << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(c.type)) << c.method;
  }
  // The bystander's next turn is what a fresh copy of it gives.
  TurnOutput next = RunChat(server_.stub(), UserTurn("bystander", "and?", 4));
  TurnOutput control = RunChat(server_.stub(), UserTurn("control", "hi", 4));
  ASSERT_TRUE(next.status.ok() && control.status.ok());
  TurnOutput control_next =
      RunChat(server_.stub(), UserTurn("control", "and?", 4));
  EXPECT_EQ(next.tokens, control_next.tokens);
  EXPECT_EQ(next.summary.cached_tokens(), control_next.summary.cached_tokens());
}

TEST_F(MalformedRequestTest, InvalidUtf8NamesTheField) {
  const grpc::Status st = Call(*stub_, "Chat", ChatBytes("\xff\xfe"));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("content"));
  EXPECT_THAT(st.error_message(), HasSubstr("UTF-8"));
  // Nothing was opened.
  grpc::ClientContext ctx;
  v1::GetSessionRequest g;
  g.set_session_id("s");
  v1::SessionInfo info;
  EXPECT_EQ(server_.stub().GetSession(&ctx, g, &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace kvsession::testing
