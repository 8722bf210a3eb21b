// Request validation in one place. Each failure is INVALID_ARGUMENT (or
// OUT_OF_RANGE) with a message naming the field.
#ifndef KVSESSION_SERVICE_REQUEST_VALIDATION_H_
#define KVSESSION_SERVICE_REQUEST_VALIDATION_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvsession/v1/kvsession.pb.h"
#include "runtime/sampler.h"

namespace kvsession::service {

struct ValidationLimits {
  int32_t max_messages = 256;
  int32_t max_message_bytes = 64 * 1024;
  int32_t max_request_bytes = 1024 * 1024;
  int32_t max_tokens = 4096;  // upper bound of max_tokens
  int32_t max_stop_strings = 8;
  int32_t max_stop_bytes = 256;
  int32_t vocab_size = 0;  // for token-id prompts
};

bool IsValidUtf8(std::string_view s);
absl::Status ValidateSessionId(std::string_view id, bool required);
absl::Status ValidateChatRequest(const v1::ChatRequest& r,
                                 const ValidationLimits& limits);
absl::Status ValidateCompleteRequest(const v1::CompleteRequest& r,
                                     const ValidationLimits& limits);

// Proto sampling fields (0 meaning "default") to runtime parameters,
// validated.
absl::StatusOr<runtime::SamplingParams> ToSamplingParams(
    const v1::SamplingParams& p);

}  // namespace kvsession::service

#endif  // KVSESSION_SERVICE_REQUEST_VALIDATION_H_
