#include "runtime/tokenizer.h"

#include <algorithm>
#include <array>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/pretokenizer.h"
#include "runtime/tokenizer_spm.h"

namespace kvsession::runtime {
namespace {

// Debian's Abseil has its own string_view type.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

// GPT-2's reversible byte <-> unicode mapping: printable Latin-1 bytes stand
// for themselves, the other 68 bytes for U+0100.. in byte order, so every
// byte string becomes printable text without spaces.
struct ByteMap {
  std::array<std::string, 256> byte_to_utf8;
  std::array<int16_t, 512> cp_to_byte;  // -1: not a byte's code point
};

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

const ByteMap& GetByteMap() {
  static const ByteMap* const map = [] {
    auto* m = new ByteMap();
    m->cp_to_byte.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) ||
                       (b >= 0xAE && b <= 0xFF);
      uint32_t cp = printable ? b : next++;
      AppendUtf8(cp, &m->byte_to_utf8[b]);
      m->cp_to_byte[cp] = static_cast<int16_t>(b);
    }
    return m;
  }();
  return *map;
}

// Length of the UTF-8 sequence starting at s[i], or 0 when none starts
// there (a lenient decoder for token texts; validity is checked elsewhere).
size_t Utf8Len(std::string_view s, size_t i, uint32_t* cp) {
  auto b = static_cast<uint8_t>(s[i]);
  size_t len = b < 0x80         ? 1
               : (b >> 5) == 6  ? 2
               : (b >> 4) == 14 ? 3
               : (b >> 3) == 30 ? 4
                                : 0;
  if (len == 0 || i + len > s.size()) return 0;
  uint32_t v = len == 1 ? b : b & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) {
    auto c = static_cast<uint8_t>(s[i + k]);
    if ((c & 0xC0) != 0x80) return 0;
    v = (v << 6) | (c & 0x3F);
  }
  *cp = v;
  return len;
}

// Bytes a byte-level token text stands for. Characters outside the map
// (not produced by byte-level vocabs) are kept as they are.
std::string DecodeByteLevel(std::string_view text) {
  const ByteMap& map = GetByteMap();
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0;
    size_t len = Utf8Len(text, i, &cp);
    if (len == 0) {
      out.push_back(text[i++]);
      continue;
    }
    if (cp < map.cp_to_byte.size() && map.cp_to_byte[cp] >= 0) {
      out.push_back(static_cast<char>(map.cp_to_byte[cp]));
    } else {
      out.append(text.substr(i, len));
    }
    i += len;
  }
  return out;
}

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
         static_cast<uint32_t>(right);
}

struct Merge {
  int32_t rank;
  int32_t result;  // symbol id of the merged text
};

// One symbol of a word being merged; a doubly linked list over a vector.
struct Symbol {
  int32_t id;  // -1 once merged into its left neighbour
  int32_t prev;
  int32_t next;
};

struct Bigram {
  int32_t rank;
  int32_t left;  // symbol index; its right partner is symbols[left].next
  int32_t right;
  int32_t right_id;  // to recognise a pair made stale by another merge
};

// Min-heap order: lowest rank first, then leftmost (as in HF and llama.cpp).
struct BigramAfter {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
  }
};

// Scratch space reused across words so the merge loop does not allocate.
struct MergeScratch {
  std::vector<Symbol> symbols;
  std::vector<Bigram> heap;
  std::string mapped;
};

bool IsSpecialType(TokenType t) {
  return t == TokenType::kControl || t == TokenType::kUserDefined ||
         t == TokenType::kUnknown;
}

// Length of the longest prefix of s[i..] that is a valid UTF-8 sequence or
// a valid start of one (Unicode's "maximal subpart"), and whether it is
// complete. Rejects overlongs, surrogates and code points past U+10FFFF.
size_t Utf8Prefix(std::string_view s, size_t i, bool* complete) {
  auto b0 = static_cast<uint8_t>(s[i]);
  *complete = false;
  if (b0 < 0x80) {
    *complete = true;
    return 1;
  }
  size_t need;
  uint8_t lo = 0x80;
  uint8_t hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;  // not a lead byte
  }
  size_t k = 1;
  for (; k < need && i + k < s.size(); ++k) {
    auto c = static_cast<uint8_t>(s[i + k]);
    if (k == 1 ? (c < lo || c > hi) : (c & 0xC0) != 0x80) return k;
  }
  *complete = k == need;
  return k;
}

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// Text with each byte that does not start a valid UTF-8 sequence replaced
// by U+FFFD, as llama.cpp reads its input: vocabs need not have tokens for
// bytes that never occur in UTF-8 (0xC0, 0xF5.. are missing from SmolLM2's).
// Returns false, leaving *fixed alone, when the text is valid already.
bool ReplaceInvalidUtf8(std::string_view text, std::string* fixed) {
  size_t i = 0;
  bool complete = false;
  while (i < text.size()) {
    size_t len = Utf8Prefix(text, i, &complete);
    if (!complete) break;
    i += len;
  }
  if (i == text.size()) return false;
  fixed->assign(text.substr(0, i));
  while (i < text.size()) {
    size_t len = Utf8Prefix(text, i, &complete);
    if (complete) {
      fixed->append(text.substr(i, len));
      i += len;
    } else {
      fixed->append(kReplacement);
      ++i;
    }
  }
  return true;
}

}  // namespace

class Tokenizer::Impl {
 public:
  absl::Status Init(VocabData vocab);

  void Encode(std::string_view text, bool parse_special, bool add_special,
              std::vector<int32_t>* out) const;
  void EncodeSegments(std::span<const TextSegment> segments,
                      std::vector<int32_t>* out) const;
  const std::string* Piece(int32_t id, bool render_special) const;

  int32_t vocab_size() const {
    return static_cast<int32_t>(vocab_.tokens.size());
  }

  std::optional<int32_t> Find(std::string_view text) const;

  VocabData vocab_;  // tokens and flags as loaded
  std::vector<TokenType> types_;
  std::vector<std::string> pieces_;  // decoded bytes per token
  std::vector<bool> hidden_;         // control/unknown: shown on request
  std::vector<bool> end_of_generation_;
  // Decode drops the space a SentencePiece encoding put in front.
  bool strip_space_prefix_ = false;

 private:
  // A stretch of the text: a special token, or text still to be encoded.
  struct Fragment {
    size_t begin;
    size_t len;
    int32_t token;  // -1: text
  };
  // Appends the fragments of `text` (at `offset` in the whole text).
  void Partition(std::string_view text, size_t offset, bool parse_special,
                 std::vector<Fragment>* frags) const;
  void EncodeFragments(std::string_view text, std::span<const Fragment> frags,
                       bool add_special, std::vector<int32_t>* out) const;
  absl::Status InitBpe();
  int32_t Intern(std::string_view text);
  void EncodeText(std::string_view text, std::vector<int32_t>* out) const;
  void EncodeWord(std::string_view word, MergeScratch* scratch,
                  std::vector<int32_t>* out) const;
  void EmitSymbol(int32_t id, std::vector<int32_t>* out) const;

  std::unique_ptr<PreTokenizer> pre_;  // gpt2
  std::unique_ptr<SpmEncoder> spm_;    // llama
  // Texts of vocab tokens and, above vocab_size(), strings that only occur
  // in merges (gpt2): merges work on these ids rather than on strings.
  absl::flat_hash_map<std::string, int32_t> symbol_ids_;
  std::vector<std::string> extra_symbols_;
  std::array<int32_t, 256> byte_symbol_{};
  absl::flat_hash_map<uint64_t, Merge> merges_;
  // Control/user-defined/unknown tokens, longest text first.
  std::vector<int32_t> specials_;
};

int32_t Tokenizer::Impl::Intern(std::string_view text) {
  auto [it, inserted] = symbol_ids_.try_emplace(
      std::string(text),
      vocab_size() + static_cast<int32_t>(extra_symbols_.size()));
  if (inserted) extra_symbols_.emplace_back(text);
  return it->second;
}

absl::Status Tokenizer::Impl::Init(VocabData vocab) {
  vocab_ = std::move(vocab);
  const bool spm = vocab_.model == "llama";
  if (vocab_.model != "gpt2" && !spm) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unsupported tokenizer.ggml.model '", vocab_.model,
        "' (byte-level BPE, \"gpt2\", and SentencePiece, \"llama\", are "
        "implemented)"));
  }
  const size_t n = vocab_.tokens.size();
  if (n == 0 ||
      n >= static_cast<size_t>(std::numeric_limits<int32_t>::max() / 2)) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab has an invalid size: ", n));
  }
  if (!vocab_.token_types.empty() && vocab_.token_types.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("token_types has ", vocab_.token_types.size(),
                     " entries for ", n, " tokens"));
  }
  if (!vocab_.scores.empty() && vocab_.scores.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scores has ", vocab_.scores.size(), " entries for ", n, " tokens"));
  }
  for (auto [name, id] : {std::pair<const char*, int32_t>{"bos", vocab_.bos_id},
                          {"eos", vocab_.eos_id},
                          {"eot", vocab_.eot_id},
                          {"unknown", vocab_.unk_id},
                          {"padding", vocab_.pad_id}}) {
    if (id < -1 || id >= static_cast<int64_t>(n)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " token id ", id, " is outside the vocab of ", n));
    }
  }

  types_ = vocab_.token_types;
  types_.resize(n, TokenType::kNormal);
  symbol_ids_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    // A duplicated text maps to its last id, as in llama.cpp.
    symbol_ids_[vocab_.tokens[i]] = static_cast<int32_t>(i);
  }
  if (spm) {
    spm_ = std::make_unique<SpmEncoder>(&symbol_ids_, vocab_.scores,
                                        vocab_.unk_id);
    strip_space_prefix_ = vocab_.add_space_prefix;
  } else if (absl::Status s = InitBpe(); !s.ok()) {
    return s;
  }

  pieces_.resize(n);
  hidden_.assign(n, false);
  end_of_generation_.assign(n, false);
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = vocab_.tokens[i];
    if (spm) {
      pieces_[i] = SpmEncoder::Piece(text, types_[i]);
    } else {
      switch (types_[i]) {
        case TokenType::kControl:
        case TokenType::kUnknown:
        case TokenType::kUserDefined:
          // Added tokens are stored as plain text, not byte-level encoded.
          pieces_[i] = text;
          break;
        case TokenType::kUnused:
          break;
        default:
          pieces_[i] = DecodeByteLevel(text);
          break;
      }
    }
    hidden_[i] =
        types_[i] == TokenType::kControl || types_[i] == TokenType::kUnknown;
    if (IsSpecialType(types_[i]) && !text.empty()) {
      specials_.push_back(static_cast<int32_t>(i));
    }
    if (types_[i] == TokenType::kControl &&
        (text == "<|im_end|>" || text == "<|eot_id|>" ||
         text == "<|end_of_text|>" || text == "<|endoftext|>" ||
         text == "<|eom_id|>" || text == "<end_of_turn>")) {
      end_of_generation_[i] = true;
    }
  }
  for (int32_t id : {vocab_.eos_id, vocab_.eot_id}) {
    if (id >= 0) end_of_generation_[id] = true;
  }
  std::stable_sort(specials_.begin(), specials_.end(),
                   [this](int32_t a, int32_t b) {
                     return vocab_.tokens[a].size() > vocab_.tokens[b].size();
                   });
  return absl::OkStatus();
}

// Byte-level BPE: the pre-tokenizer, the 256 byte symbols and the merges.
absl::Status Tokenizer::Impl::InitBpe() {
  absl::StatusOr<std::unique_ptr<PreTokenizer>> pre =
      PreTokenizer::Create(vocab_.pre);
  if (!pre.ok()) return pre.status();
  pre_ = *std::move(pre);
  const ByteMap& bytes = GetByteMap();
  for (int b = 0; b < 256; ++b) byte_symbol_[b] = Intern(bytes.byte_to_utf8[b]);

  merges_.reserve(vocab_.merges.size());
  for (size_t rank = 0; rank < vocab_.merges.size(); ++rank) {
    const std::string& m = vocab_.merges[rank];
    // Split at the first space after the first character: neither side of
    // a byte-level merge contains a space, but be lenient with a leading one.
    size_t sp = m.find(' ', 1);
    if (sp == std::string::npos || sp + 1 >= m.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("merge ", rank, " is not \"left right\": '", m, "'"));
    }
    std::string_view left(m.data(), sp);
    std::string_view right(m.data() + sp + 1, m.size() - sp - 1);
    int32_t l = Intern(left);
    int32_t r = Intern(right);
    int32_t result = Intern(std::string(left).append(right));
    // A repeated pair keeps its first (best) rank.
    merges_.try_emplace(PairKey(l, r),
                        Merge{static_cast<int32_t>(rank), result});
  }
  return absl::OkStatus();
}

void Tokenizer::Impl::Partition(std::string_view text, size_t offset,
                                bool parse_special,
                                std::vector<Fragment>* frags) const {
  // Cut the text at special-token occurrences, one token at a time, longest
  // first (llama.cpp's partitioning, so overlapping tokens resolve alike).
  std::vector<Fragment> cur = {{offset, text.size(), -1}};
  std::vector<Fragment> next;
  for (int32_t id : specials_) {
    // User-defined tokens are always matched (HF "added tokens" behave so);
    // control tokens only when asked to, so user text cannot forge them.
    if (!parse_special && types_[id] != TokenType::kUserDefined) continue;
    const std::string& tok = vocab_.tokens[id];
    if (text.find(tok) == std::string_view::npos) continue;
    next.clear();
    for (const Fragment& f : cur) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      std::string_view body = text.substr(f.begin - offset, f.len);
      size_t pos = 0;
      for (size_t hit; (hit = body.find(tok, pos)) != std::string_view::npos;
           pos = hit + tok.size()) {
        if (hit > pos) next.push_back({f.begin + pos, hit - pos, -1});
        next.push_back({f.begin + hit, tok.size(), id});
      }
      if (pos < body.size()) {
        next.push_back({f.begin + pos, body.size() - pos, -1});
      }
    }
    std::swap(cur, next);
  }
  frags->insert(frags->end(), cur.begin(), cur.end());
}

void Tokenizer::Impl::EncodeFragments(std::string_view text,
                                      std::span<const Fragment> frags,
                                      bool add_special,
                                      std::vector<int32_t>* out) const {
  if (add_special && vocab_.add_bos && vocab_.bos_id >= 0) {
    out->push_back(vocab_.bos_id);
  }
  // SentencePiece: the space prefix goes at the start and after every
  // special token (llama.cpp's is_prev_special), BOS included.
  bool after_special = true;
  for (const Fragment& f : frags) {
    if (f.token >= 0) {
      out->push_back(f.token);
      after_special = true;
    } else if (f.len > 0) {
      std::string_view body = text.substr(f.begin, f.len);
      if (spm_ != nullptr) {
        spm_->Encode(body, vocab_.add_space_prefix && after_special, out);
      } else {
        EncodeText(body, out);
      }
      after_special = false;
    }
  }
  if (add_special && vocab_.add_eos && vocab_.eos_id >= 0) {
    out->push_back(vocab_.eos_id);
  }
}

void Tokenizer::Impl::Encode(std::string_view text, bool parse_special,
                             bool add_special,
                             std::vector<int32_t>* out) const {
  std::vector<Fragment> frags;
  Partition(text, 0, parse_special, &frags);
  EncodeFragments(text, frags, add_special, out);
}

void Tokenizer::Impl::EncodeSegments(std::span<const TextSegment> segments,
                                     std::vector<int32_t>* out) const {
  std::string text;
  std::vector<Fragment> frags;
  for (const TextSegment& s : segments) {
    const size_t first = frags.size();
    const size_t offset = text.size();
    text += s.text;
    Partition(s.text, offset, s.parse_special, &frags);
    // SentencePiece sees the text between two special tokens as one
    // stretch, as if the whole text were encoded at once: otherwise every
    // segment would get its own space prefix and no merge could cross a
    // segment boundary. Byte-level BPE keeps encoding segment by segment:
    // its pre-tokenizer splits there anyway on every template we render,
    // and cached sessions hold ids encoded so.
    if (spm_ != nullptr && first > 0 && first < frags.size() &&
        frags[first - 1].token < 0 && frags[first].token < 0) {
      frags[first - 1].len += frags[first].len;
      frags.erase(frags.begin() + static_cast<ptrdiff_t>(first));
    }
  }
  EncodeFragments(text, frags, /*add_special=*/false, out);
}

void Tokenizer::Impl::EncodeText(std::string_view text,
                                 std::vector<int32_t>* out) const {
  thread_local std::vector<std::string_view> words;
  thread_local MergeScratch scratch;
  thread_local std::string fixed;
  if (ReplaceInvalidUtf8(text, &fixed)) text = fixed;
  words.clear();
  pre_->Split(text, &words);
  for (std::string_view word : words) EncodeWord(word, &scratch, out);
}

void Tokenizer::Impl::EncodeWord(std::string_view word, MergeScratch* s,
                                 std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (pre_->ignore_merges()) {
    const ByteMap& bytes = GetByteMap();
    s->mapped.clear();
    for (char c : word) {
      s->mapped += bytes.byte_to_utf8[static_cast<uint8_t>(c)];
    }
    auto it = symbol_ids_.find(Sv(s->mapped));
    if (it != symbol_ids_.end() && it->second < vocab_size()) {
      out->push_back(it->second);
      return;
    }
  }
  // One symbol per byte; merges then apply lowest rank first.
  const auto n = static_cast<int32_t>(word.size());
  std::vector<Symbol>& sym = s->symbols;
  sym.resize(n);
  for (int32_t i = 0; i < n; ++i) {
    sym[i] = {byte_symbol_[static_cast<uint8_t>(word[i])], i - 1,
              i + 1 < n ? i + 1 : -1};
  }
  std::vector<Bigram>& heap = s->heap;
  heap.clear();
  auto try_pair = [&](int32_t left) {
    if (left < 0) return;
    int32_t right = sym[left].next;
    if (right < 0) return;
    auto it = merges_.find(PairKey(sym[left].id, sym[right].id));
    if (it == merges_.end()) return;
    heap.push_back({it->second.rank, left, right, sym[right].id});
    std::push_heap(heap.begin(), heap.end(), BigramAfter());
  };
  for (int32_t i = 0; i + 1 < n; ++i) try_pair(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), BigramAfter());
    Bigram b = heap.back();
    heap.pop_back();
    Symbol& l = sym[b.left];
    // Stale if either side was merged away or the right side grew. The left
    // side's text cannot change while its right partner is alive.
    if (l.id < 0 || l.next != b.right || sym[b.right].id != b.right_id) {
      continue;
    }
    Symbol& r = sym[b.right];
    l.id = merges_.find(PairKey(l.id, r.id))->second.result;
    r.id = -1;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    try_pair(l.prev);
    try_pair(b.left);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) EmitSymbol(sym[i].id, out);
}

void Tokenizer::Impl::EmitSymbol(int32_t id, std::vector<int32_t>* out) const {
  if (id < vocab_size()) {
    out->push_back(id);
    return;
  }
  // A string that only exists in merges, or a byte the vocab lacks (SmolLM2
  // has no token for byte 0x00): emit the characters that are tokens and
  // drop the rest, as llama.cpp does. Never the unknown token: in byte-level
  // vocabs it is usually <|endoftext|>.
  std::string_view text = extra_symbols_[id - vocab_size()];
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0;
    size_t len = std::max<size_t>(1, Utf8Len(text, i, &cp));
    auto it = symbol_ids_.find(Sv(text.substr(i, len)));
    if (it != symbol_ids_.end() && it->second < vocab_size()) {
      out->push_back(it->second);
    }
    i += len;
  }
}

std::optional<int32_t> Tokenizer::Impl::Find(std::string_view text) const {
  auto it = symbol_ids_.find(Sv(text));
  if (it == symbol_ids_.end() || it->second >= vocab_size())
    return std::nullopt;
  return it->second;
}

const std::string* Tokenizer::Impl::Piece(int32_t id,
                                          bool render_special) const {
  if (id < 0 || id >= vocab_size()) return nullptr;
  if (hidden_[id] && !render_special) return nullptr;
  return &pieces_[id];
}

// --- Tokenizer ---

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(VocabData vocab) {
  auto impl = std::make_unique<Impl>();
  absl::Status status = impl->Init(std::move(vocab));
  if (!status.ok()) return status;
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text,
                                       bool parse_special,
                                       bool add_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  impl_->Encode(text, parse_special, add_special, &out);
  return out;
}

std::vector<int32_t> Tokenizer::EncodeSegments(
    std::span<const TextSegment> segments) const {
  std::vector<int32_t> out;
  impl_->EncodeSegments(segments, &out);
  return out;
}

std::string Tokenizer::TokenToPiece(int32_t id, bool render_special) const {
  const std::string* piece = impl_->Piece(id, render_special);
  return piece != nullptr ? *piece : std::string();
}

std::string Tokenizer::Decode(std::span<const int32_t> ids,
                              bool render_special) const {
  std::string out;
  // The first text after leading control tokens carries the space prefix.
  bool strip = impl_->strip_space_prefix_;
  for (int32_t id : ids) {
    const std::string* piece = impl_->Piece(id, render_special);
    if (piece == nullptr) continue;
    if (strip && !piece->empty() && !impl_->hidden_[id]) {
      strip = false;
      if (piece->starts_with(' ')) {
        out.append(*piece, 1);
        continue;
      }
    }
    out += *piece;
  }
  return out;
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size(); }
int32_t Tokenizer::bos_id() const { return impl_->vocab_.bos_id; }
int32_t Tokenizer::eos_id() const { return impl_->vocab_.eos_id; }

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->end_of_generation_[id];
}

std::optional<int32_t> Tokenizer::FindToken(std::string_view text) const {
  return impl_->Find(text);
}

TokenType Tokenizer::token_type(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return TokenType::kUndefined;
  return impl_->types_[id];
}

// --- StreamingDetokenizer ---

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer,
                                           bool render_special)
    : tokenizer_(tokenizer), render_special_(render_special) {}

std::string StreamingDetokenizer::Push(int32_t id) {
  pending_ += tokenizer_.TokenToPiece(id, render_special_);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    bool complete = false;
    size_t len = Utf8Prefix(pending_, i, &complete);
    if (complete) {
      out.append(pending_, i, len);
      i += len;
    } else if (i + len == pending_.size() && len > 0) {
      break;  // a sequence the next token may complete
    } else {
      out += kReplacement;  // can never become valid
      i += std::max<size_t>(len, 1);
    }
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out = pending_.empty() ? "" : kReplacement;
  pending_.clear();
  return out;
}

}  // namespace kvsession::runtime
