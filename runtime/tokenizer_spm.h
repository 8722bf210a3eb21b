// SentencePiece-style BPE of `tokenizer.ggml.model = llama` vocabularies
// (Gemma, Llama 2, Mistral), as llama.cpp runs it (llm_tokenizer_spm in
// src/llama-vocab.cpp). Private to the tokenizer.
#ifndef KVSESSION_RUNTIME_TOKENIZER_SPM_H_
#define KVSESSION_RUNTIME_TOKENIZER_SPM_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "runtime/tokenizer.h"

namespace kvsession::runtime {

class SpmEncoder {
 public:
  using TokenIds = absl::flat_hash_map<std::string, int32_t>;

  // `ids` maps the text of every vocab token to its id and must outlive the
  // encoder; `scores` has one entry per token (empty: all 0, as llama.cpp
  // reads a GGUF without scores). unk_id may be -1.
  SpmEncoder(const TokenIds* ids, std::vector<float> scores, int32_t unk_id);

  // Appends the ids of one fragment of text that holds no special tokens.
  // Spaces become U+2581 first, with one more in front when
  // `add_space_prefix`. Thread-safe.
  void Encode(std::string_view fragment, bool add_space_prefix,
              std::vector<int32_t>* out) const;

  // The bytes a token decodes to, by its type: U+2581 -> ' ' for normal
  // tokens, the byte of a `<0xNN>` byte token, the text itself for
  // control, unknown and user-defined tokens, nothing for unused and
  // undefined ones (as llama.cpp's token_to_piece).
  static std::string Piece(std::string_view text, TokenType type);

 private:
  void EmitSymbol(std::string_view text, std::vector<int32_t>* out) const;

  const TokenIds* ids_;
  std::vector<float> scores_;
  int32_t unk_id_;
  // Byte fallback: the id of <0xNN> (else of the 1-byte token, else unk,
  // else -1 to drop the byte).
  std::array<int32_t, 256> byte_ids_{};
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_TOKENIZER_SPM_H_
