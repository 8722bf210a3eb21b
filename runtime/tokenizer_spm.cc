#include "runtime/tokenizer_spm.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvsession::runtime {
namespace {

// Debian's Abseil has its own string_view type.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581

// Length of the UTF-8 sequence a byte announces, from its high nibble only
// (llama.cpp's unicode_len_utf8): continuation bytes count as 1, and
// nothing checks the bytes that follow, so invalid input splits the same
// way it does there.
size_t LeadLength(char c) {
  static constexpr size_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1,
                                          1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[static_cast<uint8_t>(c) >> 4];
}

// A piece of the escaped text; len 0 once merged into its left neighbour.
struct Symbol {
  int32_t prev;
  int32_t next;
  uint32_t begin;
  uint32_t len;
};

struct Bigram {
  float score;  // of the merged token
  int32_t left;
  int32_t right;
  uint32_t size;  // bytes of the merge; a mismatch marks a stale pair
};

// Max-heap order: highest score first, then leftmost, as llama.cpp's queue.
// Live pairs never tie on both (one per left symbol), so pop order is
// unique and the heap implementation does not matter.
struct BigramBefore {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

struct Scratch {
  std::string text;
  std::vector<Symbol> symbols;
  std::vector<Bigram> heap;
};

}  // namespace

SpmEncoder::SpmEncoder(const TokenIds* ids, std::vector<float> scores,
                       int32_t unk_id)
    : ids_(ids), scores_(std::move(scores)), unk_id_(unk_id) {
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = ids_->find(absl::string_view(name));
    if (it == ids_->end()) {
      it = ids_->find(absl::string_view(std::string(1, static_cast<char>(b))));
    }
    byte_ids_[b] = it != ids_->end() ? it->second : unk_id_;
  }
}

void SpmEncoder::Encode(std::string_view fragment, bool add_space_prefix,
                        std::vector<int32_t>* out) const {
  thread_local Scratch s;
  std::string& text = s.text;
  text.clear();
  if (add_space_prefix) text.append(kSpaceMarker);
  for (char c : fragment) {
    if (c == ' ') {
      text.append(kSpaceMarker);
    } else {
      text.push_back(c);
    }
  }
  if (text.empty()) return;

  std::vector<Symbol>& sym = s.symbols;
  sym.clear();
  for (size_t offset = 0; offset < text.size();) {
    const size_t len = std::min(LeadLength(text[offset]), text.size() - offset);
    const auto index = static_cast<int32_t>(sym.size());
    sym.push_back({index - 1, offset + len == text.size() ? -1 : index + 1,
                   static_cast<uint32_t>(offset), static_cast<uint32_t>(len)});
    offset += len;
  }

  std::vector<Bigram>& heap = s.heap;
  heap.clear();
  // Any vocab token may be a merge result, control tokens included: a
  // plain "</s>" can merge into the end-of-sequence token, as in llama.cpp.
  auto try_pair = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const uint32_t size = sym[left].len + sym[right].len;
    auto it =
        ids_->find(Sv(std::string_view(text).substr(sym[left].begin, size)));
    if (it == ids_->end()) return;
    const float score = scores_.empty() ? 0.0f : scores_[it->second];
    heap.push_back({score, left, right, size});
    std::push_heap(heap.begin(), heap.end(), BigramBefore());
  };
  for (int32_t i = 1; i < static_cast<int32_t>(sym.size()); ++i) {
    try_pair(i - 1, i);
  }
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), BigramBefore());
    const Bigram b = heap.back();
    heap.pop_back();
    Symbol& l = sym[b.left];
    Symbol& r = sym[b.right];
    // Symbols only grow, so a size that no longer adds up means one side
    // merged since this pair was queued.
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.size) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    try_pair(l.prev, b.left);
    try_pair(b.left, l.next);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) {
    EmitSymbol(std::string_view(text).substr(sym[i].begin, sym[i].len), out);
  }
}

void SpmEncoder::EmitSymbol(std::string_view text,
                            std::vector<int32_t>* out) const {
  // Merges only make tokens, so a symbol that is not one is a single
  // character (or stray byte) the vocab lacks: fall back to its bytes.
  // (llama.cpp's resegment also looks for sub-merges, which by the same
  // argument never applies.)
  auto it = ids_->find(Sv(text));
  if (it != ids_->end()) {
    out->push_back(it->second);
    return;
  }
  for (char c : text) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id >= 0) out->push_back(id);
  }
}

std::string SpmEncoder::Piece(std::string_view text, TokenType type) {
  switch (type) {
    case TokenType::kControl:
    case TokenType::kUnknown:
    case TokenType::kUserDefined:
      return std::string(text);
    case TokenType::kNormal: {
      std::string out;
      out.reserve(text.size());
      for (size_t i = 0; i < text.size();) {
        if (text.substr(i, kSpaceMarker.size()) == kSpaceMarker) {
          out.push_back(' ');
          i += kSpaceMarker.size();
        } else {
          out.push_back(text[i++]);
        }
      }
      return out;
    }
    case TokenType::kByte: {
      auto hex = [](char c) {
        return c >= '0' && c <= '9'   ? c - '0'
               : c >= 'A' && c <= 'F' ? c - 'A' + 10
               : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                      : -1;
      };
      if (text.size() == 6 && text.starts_with("<0x") && text.back() == '>' &&
          hex(text[3]) >= 0 && hex(text[4]) >= 0) {
        return std::string(1,
                           static_cast<char>(hex(text[3]) * 16 + hex(text[4])));
      }
      return "";
    }
    case TokenType::kUndefined:
    case TokenType::kUnused:
      break;
  }
  return "";
}

}  // namespace kvsession::runtime
