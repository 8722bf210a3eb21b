// CHECK and LOG macros. Hand-written because Debian 12's Abseil (20220623)
// predates absl/log; when the project moves to a newer Abseil these map 1:1
// onto CHECK/LOG. CHECK is for broken invariants only: errors that input can
// cause travel as absl::Status.
#ifndef KVSESSION_KERNELS_CHECK_H_
#define KVSESSION_KERNELS_CHECK_H_

#include <sstream>
#include <string_view>

namespace kvsession::internal {

class LogMessage {
 public:
  // fatal: abort after printing.
  LogMessage(const char* file, int line, std::string_view severity,
             bool fatal);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;

  template <typename T>
  LogMessage& operator<<(const T& v) {
    stream_ << v;
    return *this;
  }

 private:
  std::ostringstream stream_;
  bool fatal_;
};

// Lets `KVS_CHECK(c) << ...` be a statement with the stream on the right.
struct Voidify {
  void operator&(const LogMessage&) {}
};

}  // namespace kvsession::internal

#define KVS_LOG(severity)                                            \
  ::kvsession::internal::LogMessage(__FILE__, __LINE__, #severity, \
                                    std::string_view(#severity) == "FATAL")

#define KVS_CHECK(cond)                                             \
  (cond) ? (void)0                                                  \
         : ::kvsession::internal::Voidify() &                       \
               ::kvsession::internal::LogMessage(__FILE__, __LINE__, \
                                                 "FATAL", true)     \
                   << "Check failed: " #cond " "

#define KVS_CHECK_OK(expr)                                                  \
  do {                                                                      \
    const auto& kvs_status_ = (expr);                                       \
    KVS_CHECK(kvs_status_.ok()) << kvs_status_;                             \
  } while (0)

#endif  // KVSESSION_KERNELS_CHECK_H_
