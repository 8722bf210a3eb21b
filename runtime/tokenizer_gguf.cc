// Tokenizer::FromGguf: VocabData from a GGUF's tokenizer.ggml.* metadata,
// with llama.cpp's defaults for absent keys.
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/gguf.h"
#include "runtime/pretokenizer.h"
#include "runtime/tokenizer.h"

namespace kvsession::runtime {
namespace {

// Debian's Abseil has its own string_view type.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

// Copies an optional GGUF value: absent keys leave `out` as it is.
template <typename T, typename U>
absl::Status ReadOptional(absl::StatusOr<T> value, U* out) {
  if (absl::IsNotFound(value.status())) return absl::OkStatus();
  if (!value.ok()) return value.status();
  *out = static_cast<U>(*value);
  return absl::OkStatus();
}

// Token ids are usually uint32; a negative one means "none".
absl::Status ReadTokenId(const GgufFile& file, std::string_view key,
                         int32_t* out) {
  absl::StatusOr<int64_t> v = file.GetInt(key);
  if (absl::IsNotFound(v.status())) return absl::OkStatus();
  if (!v.ok()) return v.status();
  if (*v > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Sv(key), " is out of range: ", *v));
  }
  *out = *v < 0 ? -1 : static_cast<int32_t>(*v);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(
    const GgufFile& file) {
  VocabData v;
  absl::StatusOr<std::string> model = file.GetString("tokenizer.ggml.model");
  if (!model.ok()) return model.status();
  v.model = *std::move(model);
  const bool spm = v.model == "llama";
  if (absl::Status s =
          ReadOptional(file.GetString("tokenizer.ggml.pre"), &v.pre);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::vector<std::string>> tokens =
      file.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens.ok()) return tokens.status();
  v.tokens = *std::move(tokens);
  absl::StatusOr<std::vector<int64_t>> types =
      file.GetIntArray("tokenizer.ggml.token_type");
  if (types.ok()) {
    v.token_types.reserve(types->size());
    for (int64_t t : *types) {
      v.token_types.push_back(t >= 0 && t <= 6 ? static_cast<TokenType>(t)
                                               : TokenType::kUndefined);
    }
  } else if (!absl::IsNotFound(types.status())) {
    return types.status();
  }
  absl::StatusOr<std::vector<std::string>> merges =
      file.GetStringArray("tokenizer.ggml.merges");
  if (merges.ok()) {
    v.merges = *std::move(merges);
  } else if (!absl::IsNotFound(merges.status())) {
    return merges.status();
  }
  absl::StatusOr<std::vector<double>> scores =
      file.GetFloatArray("tokenizer.ggml.scores");
  if (scores.ok()) {
    // Stored as float32, so the round trip through double is exact.
    v.scores.assign(scores->begin(), scores->end());
  } else if (!absl::IsNotFound(scores.status())) {
    return scores.status();
  }
  if (spm) {
    // llama.cpp's defaults for SentencePiece vocabs (Llama 1 numbering),
    // where they fit the vocab.
    const auto n = static_cast<int64_t>(v.tokens.size());
    v.unk_id = n > 0 ? 0 : -1;
    v.bos_id = n > 1 ? 1 : -1;
    v.eos_id = n > 2 ? 2 : -1;
  }
  for (auto [key, out] : {std::pair<const char*, int32_t*>{
                              "tokenizer.ggml.bos_token_id", &v.bos_id},
                          {"tokenizer.ggml.eos_token_id", &v.eos_id},
                          {"tokenizer.ggml.eot_token_id", &v.eot_id},
                          {"tokenizer.ggml.unknown_token_id", &v.unk_id},
                          {"tokenizer.ggml.padding_token_id", &v.pad_id}}) {
    if (absl::Status s = ReadTokenId(file, key, out); !s.ok()) return s;
  }
  v.add_bos = spm || PreTokenizer::DefaultAddBos(v.pre);
  v.add_space_prefix = spm;
  for (auto [key, out] :
       {std::pair<const char*, bool*>{"tokenizer.ggml.add_bos_token",
                                      &v.add_bos},
        {"tokenizer.ggml.add_eos_token", &v.add_eos},
        {"tokenizer.ggml.add_space_prefix", &v.add_space_prefix}}) {
    if (absl::Status s = ReadOptional(file.GetBool(key), out); !s.ok()) {
      return s;
    }
  }
  return Create(std::move(v));
}

}  // namespace kvsession::runtime
