// Pieces the GGUF reader (gguf.cc) and writer (gguf_writer.cc) share.
#ifndef KVSESSION_RUNTIME_GGUF_INTERNAL_H_
#define KVSESSION_RUNTIME_GGUF_INTERNAL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "runtime/gguf.h"

namespace kvsession::runtime::gguf_internal {

inline constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
inline constexpr uint32_t kWriteVersion = 3;
inline constexpr uint32_t kMaxDims = 4;
inline constexpr uint64_t kDefaultAlignment = 32;
inline constexpr char kAlignmentKey[] = "general.alignment";

template <typename... Args>
absl::Status Err(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

// This Abseil's string_view is its own type, not std::string_view.
absl::string_view Sv(std::string_view s);
// s in single quotes, non-printable bytes escaped (for error messages).
std::string Quote(std::string_view s);
bool IsPowerOfTwo(uint64_t a);
// Checks a tensor shape against its type and returns its byte size; errors
// leave naming the tensor to the caller.
absl::StatusOr<uint64_t> ShapeBytes(uint32_t raw_type,
                                    const std::vector<int64_t>& dims);
// A non-negative integer value of any width.
bool ToUint(const GgufValue& v, uint64_t* out);

}  // namespace kvsession::runtime::gguf_internal

#endif  // KVSESSION_RUNTIME_GGUF_INTERNAL_H_
