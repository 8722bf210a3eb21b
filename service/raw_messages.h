// Requests arrive as raw bytes and are parsed here, so that a malformed one
// gets INVALID_ARGUMENT with a message: with generated (typed) handlers,
// gRPC answers a request that fails to parse with UNIMPLEMENTED and no
// message, before any handler of ours runs.
#ifndef KVSESSION_SERVICE_RAW_MESSAGES_H_
#define KVSESSION_SERVICE_RAW_MESSAGES_H_

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"

namespace kvsession::service {

// Parses `in` into `out`. INVALID_ARGUMENT naming the message type, and the
// field where protobuf says which (a string field with invalid UTF-8).
absl::Status ParseRequest(const grpc::ByteBuffer& in,
                          google::protobuf::Message* out);

// Serializes `message` into `out`.
void SerializeResponse(const google::protobuf::Message& message,
                       grpc::ByteBuffer* out);

}  // namespace kvsession::service

#endif  // KVSESSION_SERVICE_RAW_MESSAGES_H_
