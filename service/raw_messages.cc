#include "service/raw_messages.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/support/slice.h"

namespace kvsession::service {
namespace {

// Protobuf reports which field broke a parse only to its log. While this
// thread parses a request, the log line becomes part of the status instead
// of going to stderr (a client sending garbage would flood it otherwise).
thread_local std::string* capture = nullptr;

void LogHandler(google::protobuf::LogLevel level, const char* filename,
                int line, const std::string& message) {
  if (capture != nullptr) {
    *capture = message;
    return;
  }
  // As protobuf's default handler does.
  static const char* const kLevels[] = {"INFO", "WARNING", "ERROR", "FATAL"};
  std::fprintf(stderr, "[libprotobuf %s %s:%d] %s\n", kLevels[level], filename,
               line, message.c_str());
}

void InstallLogHandler() {
  static const bool installed = [] {
    google::protobuf::SetLogHandler(&LogHandler);
    return true;
  }();
  (void)installed;
}

}  // namespace

absl::Status ParseRequest(const grpc::ByteBuffer& in,
                          google::protobuf::Message* out) {
  InstallLogHandler();
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (grpc::Status st = in.Dump(&slices); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed ", out->GetTypeName(), ": ", st.error_message()));
  }
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  std::string why;
  capture = &why;
  const bool ok = out->ParseFromString(bytes);
  capture = nullptr;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "malformed ", out->GetTypeName(), ": ",
      why.empty() ? "not a valid protobuf encoding of it" : why));
}

void SerializeResponse(const google::protobuf::Message& message,
                       grpc::ByteBuffer* out) {
  const std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  *out = grpc::ByteBuffer(&slice, 1);
}

}  // namespace kvsession::service
