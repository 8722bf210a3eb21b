#include "session_store/prefix_index.h"

#include <algorithm>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "kernels/check.h"

namespace kvsession::session_store {

PrefixIndex::PrefixIndex(int32_t num_blocks, int32_t block_size)
    : block_size_(block_size),
      entries_(static_cast<size_t>(num_blocks)),
      tokens_(static_cast<size_t>(num_blocks) * block_size) {}

uint64_t PrefixIndex::Hash(int32_t parent,
                           std::span<const int32_t> tokens) const {
  return absl::HashOf(parent, absl::MakeConstSpan(tokens.data(), tokens.size()));
}

std::span<const int32_t> PrefixIndex::tokens(int32_t block) const {
  return std::span<const int32_t>(tokens_).subspan(
      static_cast<size_t>(block) * block_size_, block_size_);
}

bool PrefixIndex::Matches(int32_t block, int32_t parent,
                          std::span<const int32_t> tokens) const {
  const std::span<const int32_t> stored = this->tokens(block);
  return entries_[block].parent == parent &&
         std::equal(stored.begin(), stored.end(), tokens.begin(), tokens.end());
}

int32_t PrefixIndex::Find(int32_t parent,
                          std::span<const int32_t> tokens) const {
  KVS_CHECK(static_cast<int32_t>(tokens.size()) == block_size_);
  auto [begin, end] = by_key_.equal_range(Hash(parent, tokens));
  for (auto it = begin; it != end; ++it) {
    if (Matches(it->second, parent, tokens)) return it->second;
  }
  return kNotFound;
}

bool PrefixIndex::Insert(int32_t block, int32_t parent,
                         std::span<const int32_t> tokens) {
  KVS_CHECK(static_cast<int32_t>(tokens.size()) == block_size_);
  if (entries_.at(block).indexed || Find(parent, tokens) != kNotFound) {
    return false;
  }
  Entry& e = entries_[block];
  e.indexed = true;
  e.parent = parent;
  e.hash = Hash(parent, tokens);
  std::copy(tokens.begin(), tokens.end(),
            tokens_.begin() + static_cast<ptrdiff_t>(block) * block_size_);
  by_key_.emplace(e.hash, block);
  return true;
}

void PrefixIndex::Erase(int32_t block) {
  Entry& e = entries_.at(block);
  if (!e.indexed) return;
  auto [begin, end] = by_key_.equal_range(e.hash);
  for (auto it = begin; it != end; ++it) {
    if (it->second == block) {
      by_key_.erase(it);
      break;
    }
  }
  e = Entry();
}

absl::Status PrefixIndex::CheckInvariants() const {
  size_t indexed = 0;
  for (const Entry& e : entries_) indexed += e.indexed;
  if (indexed != by_key_.size()) {
    return absl::InternalError(absl::StrCat("prefix index: ", indexed,
                                            " blocks marked, ", by_key_.size(),
                                            " keys"));
  }
  for (const auto& [hash, block] : by_key_) {
    if (block < 0 || block >= static_cast<int32_t>(entries_.size()) ||
        !entries_[block].indexed || entries_[block].hash != hash ||
        Hash(entries_[block].parent, tokens(block)) != hash) {
      return absl::InternalError(
          absl::StrCat("prefix index: key of block ", block, " is stale"));
    }
  }
  return absl::OkStatus();
}

}  // namespace kvsession::session_store
