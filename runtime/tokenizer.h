// Tokenizers built from GGUF metadata, matching llama.cpp's:
//  - tokenizer.ggml.model = gpt2: byte-level BPE (SmolLM2, Llama 3, Qwen2),
//    with the pre-tokenizer split regexes named by `tokenizer.ggml.pre`;
//  - tokenizer.ggml.model = llama: SentencePiece-style BPE over U+2581 for
//    spaces, merges chosen by token score, byte fallback to <0xNN> tokens
//    (Gemma, Llama 2, Mistral).
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
  std::string model = "gpt2";   // tokenizer.ggml.model: "gpt2" or "llama"
  std::string pre = "default";  // tokenizer.ggml.pre (gpt2 only)
  std::vector<std::string> tokens;
  std::vector<TokenType> token_types;  // empty: all normal
  std::vector<std::string> merges;     // gpt2: "left right", best first
  std::vector<float> scores;           // llama: per token (empty: all 0)
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t eot_id = -1;  // end of turn, if the vocab names one
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  bool add_bos = false;
  bool add_eos = false;
  // llama only: a U+2581 goes in front of the text at the start and after
  // each special token (tokenizer.ggml.add_space_prefix; FromGguf makes it
  // true when the key is absent, as llama.cpp does).
  bool add_space_prefix = false;
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
  // `add_special` is true. As in llama.cpp:
  //  - gpt2: each byte that is not part of valid UTF-8 is read as U+FFFD,
  //    and bytes the vocab has no token for (a few C0 controls in
  //    SmolLM2's) are dropped;
  //  - llama: bytes are kept as they are (invalid UTF-8 falls back to byte
  //    tokens; a byte without one becomes the unknown token), and with
  //    add_space_prefix each stretch of text at the start or after a
  //    special token gets a leading U+2581. A U+2581 in the text is a
  //    space to SentencePiece, and so is decoded.
  // Otherwise Decode(Encode(s)) == s.
  std::vector<int32_t> Encode(std::string_view text, bool parse_special,
                              bool add_special = false) const;
  // Encodes the concatenation of segments, each with its own parse_special
  // (a chat's template text with control tokens, message content without),
  // as Encode would encode the whole text if only the template's control
  // tokens were special. No BOS/EOS is added.
  struct TextSegment {
    std::string_view text;
    bool parse_special = false;
  };
  std::vector<int32_t> EncodeSegments(
      std::span<const TextSegment> segments) const;
  // Bytes of a token's text (control tokens render as their text only if
  // `render_special`). Never strips the space prefix: a piece continues
  // whatever came before it.
  std::string TokenToPiece(int32_t id, bool render_special = false) const;
  // The pieces joined. With add_space_prefix (llama), the first text after
  // any leading control tokens (BOS) loses one leading space, as
  // SentencePiece decodes, so Decode(Encode(s)) == s also with add_special.
  // (llama.cpp's llama_detokenize drops it only when the first token is
  // text, giving [<s>, "▁Hi"] -> " Hi".)
  std::string Decode(std::span<const int32_t> ids,
                     bool render_special = false) const;

  int32_t vocab_size() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  // End of generation: eos, eot and other control tokens that end a turn
  // (<|im_end|>, <|eot_id|>, <|end_of_text|>, <|endoftext|>, <|eom_id|>,
  // <end_of_turn>).
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
