// Fixed-capacity pool of KV blocks over one arena (one tier). Blocks are
// addressed by id; metadata (reference counts, the free list) lives outside
// the arena so the arena can be device memory.
#ifndef KVSESSION_SESSION_STORE_BLOCK_POOL_H_
#define KVSESSION_SESSION_STORE_BLOCK_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvsession::session_store {

class BlockPool {
 public:
  struct Options {
    int32_t num_blocks = 0;
  };
  explicit BlockPool(const Options& options);

  int32_t capacity() const { return static_cast<int32_t>(ref_counts_.size()); }
  int32_t free_blocks() const { return static_cast<int32_t>(free_.size()); }
  int32_t used_blocks() const { return capacity() - free_blocks(); }

  // Takes n free blocks (reference count 1 each). RESOURCE_EXHAUSTED, with
  // nothing taken, when fewer than n are free.
  absl::StatusOr<std::vector<int32_t>> Allocate(int32_t n);
  // Adds a reference to a used block (sharing).
  void AddRef(int32_t block);
  // Drops one reference of each block; a block whose count reaches zero is
  // free again.
  void Release(std::span<const int32_t> blocks);
  int32_t ref_count(int32_t block) const;

  // Copy ordering. A block's fence is the ticket of the last planned copy
  // that reads or writes it; whoever computes into or reads the block must
  // wait until that copy has landed. Fences survive release, so a block
  // handed out again still waits for a copy planned while it was free.
  void SetFence(int32_t block, uint64_t ticket);
  uint64_t fence(int32_t block) const { return fences_.at(block); }
  // The largest fence of `blocks` (0 for none).
  uint64_t MaxFence(std::span<const int32_t> blocks) const;

  // Verifies free + used == capacity, the free list holds exactly the blocks
  // whose count is zero, and no block is on it twice.
  absl::Status CheckInvariants() const;

 private:
  std::vector<int32_t> ref_counts_;
  std::vector<uint64_t> fences_;
  std::vector<int32_t> free_;  // LIFO: recently freed blocks are warm in cache
};

}  // namespace kvsession::session_store

#endif  // KVSESSION_SESSION_STORE_BLOCK_POOL_H_
