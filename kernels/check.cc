#include "kernels/check.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace kvsession::internal {

LogMessage::LogMessage(const char* file, int line, std::string_view severity,
                       bool fatal)
    : fatal_(fatal) {
  std::string_view path(file);
  if (size_t slash = path.rfind('/'); slash != std::string_view::npos) {
    path.remove_prefix(slash + 1);
  }
  stream_ << severity.substr(0, 1) << ' ' << path << ':' << line << "] ";
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string s = stream_.str();
  std::fwrite(s.data(), 1, s.size(), stderr);
  if (fatal_) {
    std::fflush(stderr);
    std::abort();
  }
}

}  // namespace kvsession::internal
