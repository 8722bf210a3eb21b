// Pre-tokenizer of byte-level BPE vocabularies: splits text into the pieces
// that BPE merges within, using the regex list that `tokenizer.ggml.pre`
// names. Private to the tokenizer.
#ifndef KVSESSION_RUNTIME_PRETOKENIZER_H_
#define KVSESSION_RUNTIME_PRETOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kvsession::runtime {

class PreTokenizer {
 public:
  // INVALID_ARGUMENT for a pre-tokenizer name we do not know.
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(
      std::string_view pre_name);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Appends the pieces of `text` (views into it, in order, covering it
  // exactly) to `pieces`. The regexes are applied one after the other, each
  // to every piece the previous one produced; text between two matches
  // becomes a piece of its own, and a piece's ends count as the ends of the
  // subject (so `\s+(?!\S)` matches trailing spaces of a piece). Invalid
  // UTF-8 never matches and so ends up in a piece between matches.
  // Thread-safe.
  void Split(std::string_view text,
             std::vector<std::string_view>* pieces) const;

  // Whether an exact vocab hit on a whole piece bypasses the merges (Llama 3
  // style vocabularies, as llama.cpp does).
  bool ignore_merges() const { return ignore_merges_; }
  // Whether the vocab family adds BOS when the GGUF does not say
  // (tokenizer.ggml.add_bos_token absent), as llama.cpp assumes.
  static bool DefaultAddBos(std::string_view pre_name);

 private:
  struct Regex;
  struct MatchContext;
  PreTokenizer() = default;

  std::vector<std::unique_ptr<Regex>> regexes_;
  std::unique_ptr<MatchContext> match_context_;
  bool ignore_merges_ = false;
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_PRETOKENIZER_H_
