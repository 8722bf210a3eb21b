// Holds back generated text that could still become a stop string, so a
// client never sees part of one.
#ifndef KVSESSION_RUNTIME_STOP_MATCHER_H_
#define KVSESSION_RUNTIME_STOP_MATCHER_H_

#include <string>
#include <string_view>
#include <vector>

namespace kvsession::runtime {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);

  // Adds text; returns the text that is now safe to emit. After a match,
  // returns the text before the stop string and stopped() becomes true.
  std::string Push(std::string_view text);
  // The held-back text (at the end of generation without a match).
  std::string Flush();
  bool stopped() const { return stopped_; }
  // Bytes held back (not yet returned by Push).
  size_t held_bytes() const { return pending_.size(); }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_STOP_MATCHER_H_
