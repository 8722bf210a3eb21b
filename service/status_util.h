// The one place where absl::Status becomes grpc::Status.
#ifndef KVSESSION_SERVICE_STATUS_UTIL_H_
#define KVSESSION_SERVICE_STATUS_UTIL_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace kvsession::service {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace kvsession::service

#endif  // KVSESSION_SERVICE_STATUS_UTIL_H_
