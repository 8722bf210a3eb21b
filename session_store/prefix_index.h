// Index of full device blocks by content, so that sessions that start with
// the same tokens (a common system prompt) share those blocks instead of
// computing and storing them again.
//
// A block's key is its tokens together with the id of the block before it
// in the table that registered it. Matching the parent block by identity
// makes a match exact for the whole prefix by induction (the first block's
// parent is kNoParent), with no hash chain that could collide. It needs one
// property of the store: every table that holds an indexed block holds its
// parent just before it, so a parent lives at least as long as its children.
//
// Sharing is exact because K/V of a token are bitwise the same however they
// were computed (DESIGN.md, invariant 5).
#ifndef KVSESSION_SESSION_STORE_PREFIX_INDEX_H_
#define KVSESSION_SESSION_STORE_PREFIX_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"

namespace kvsession::session_store {

class PrefixIndex {
 public:
  static constexpr int32_t kNoParent = -1;
  static constexpr int32_t kNotFound = -1;

  PrefixIndex(int32_t num_blocks, int32_t block_size);

  // The block registered for (parent, tokens), or kNotFound. `tokens` must
  // hold block_size tokens.
  int32_t Find(int32_t parent, std::span<const int32_t> tokens) const;
  // Registers `block` under (parent, tokens) unless that key has a block
  // already or `block` is registered; returns whether it was registered.
  bool Insert(int32_t block, int32_t parent, std::span<const int32_t> tokens);
  // Forgets `block` (freed, or about to be overwritten). No-op if absent.
  void Erase(int32_t block);

  bool Contains(int32_t block) const { return entries_[block].indexed; }
  int32_t parent(int32_t block) const { return entries_[block].parent; }
  std::span<const int32_t> tokens(int32_t block) const;
  size_t size() const { return by_key_.size(); }

  // Every key maps to a registered block whose stored key hashes to it.
  absl::Status CheckInvariants() const;

 private:
  struct Entry {
    bool indexed = false;
    int32_t parent = kNoParent;
    uint64_t hash = 0;
  };
  uint64_t Hash(int32_t parent, std::span<const int32_t> tokens) const;
  bool Matches(int32_t block, int32_t parent,
               std::span<const int32_t> tokens) const;

  int32_t block_size_;
  std::vector<Entry> entries_;   // by block id
  std::vector<int32_t> tokens_;  // [block][block_size], valid when indexed
  // Hash -> block. Collisions of distinct keys are resolved by probing the
  // multimap's equal range and comparing the stored key exactly.
  std::unordered_multimap<uint64_t, int32_t> by_key_;
};

}  // namespace kvsession::session_store

#endif  // KVSESSION_SESSION_STORE_PREFIX_INDEX_H_
