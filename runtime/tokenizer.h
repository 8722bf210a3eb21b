// Byte-level BPE tokenizer (GPT-2 family: SmolLM2, Llama 3, Qwen2) built from
// GGUF metadata, with the pre-tokenizer split regexes named by
// `tokenizer.ggml.pre`.
#ifndef KVSESSION_RUNTIME_TOKENIZER_H_
#define KVSESSION_RUNTIME_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kvsession::runtime {

class GgufFile;

// Token types of tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct VocabData {
  std::string model = "gpt2";  // tokenizer.ggml.model
  std::string pre = "default";  // tokenizer.ggml.pre
  std::vector<std::string> tokens;
  std::vector<TokenType> token_types;  // empty: all normal
  std::vector<std::string> merges;     // "left right", highest priority first
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t eot_id = -1;  // end of turn, if the vocab names one
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  bool add_bos = false;
  bool add_eos = false;
};

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(VocabData vocab);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(
      const GgufFile& file);
  ~Tokenizer();

  // Encodes text. With parse_special, the text of control tokens (e.g.
  // "<|im_start|>") becomes that token; without, it is tokenized as ordinary
  // text. User-defined (added) tokens are matched either way, as in HF
  // tokenizers and llama.cpp. add_bos/add_eos follow the vocab flags when
  // `add_special` is true. As in llama.cpp, each byte that is not part of
  // valid UTF-8 is read as U+FFFD, and bytes the vocab has no token for
  // (a few C0 controls in SmolLM2's) are dropped; otherwise
  // Decode(Encode(s)) == s.
  std::vector<int32_t> Encode(std::string_view text, bool parse_special,
                              bool add_special = false) const;
  // Bytes of a token's text (control tokens render as their text only if
  // `render_special`).
  std::string TokenToPiece(int32_t id, bool render_special = false) const;
  std::string Decode(std::span<const int32_t> ids,
                     bool render_special = false) const;

  int32_t vocab_size() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  // End of generation: eos, eot and other control tokens that end a turn
  // (<|im_end|>, <|eot_id|>, <|end_of_text|>, <|endoftext|>).
  bool IsEndOfGeneration(int32_t id) const;
  // Id of a token whose text is exactly `text` (e.g. "<|im_end|>").
  std::optional<int32_t> FindToken(std::string_view text) const;
  TokenType token_type(int32_t id) const;

 private:
  class Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of token ids into text without ever emitting part of a
// UTF-8 character: bytes of an incomplete sequence wait for the next token.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer,
                                bool render_special = false);
  // Text that became complete with this token (may be empty).
  std::string Push(int32_t id);
  // Whatever is still pending (invalid bytes become U+FFFD).
  std::string Flush();
  // Bytes held back for an incomplete UTF-8 character.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool render_special_;
  std::string pending_;
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_TOKENIZER_H_
