#include "session_store/block_pool.h"

#include <cstdlib>
#include <algorithm>

#include "kernels/check.h"
#include "absl/strings/str_cat.h"

namespace kvsession::session_store {

BlockPool::BlockPool(const Options& options)
    : ref_counts_(static_cast<size_t>(options.num_blocks), 0),
      fences_(static_cast<size_t>(options.num_blocks), 0) {
  KVS_CHECK(options.num_blocks >= 0);
  free_.reserve(ref_counts_.size());
  // Highest id first so that allocation hands out 0, 1, 2, ...
  for (int32_t b = options.num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

absl::StatusOr<std::vector<int32_t>> BlockPool::Allocate(int32_t n) {
  KVS_CHECK(n >= 0);
  if (n > free_blocks()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("need ", n, " KV blocks, ", free_blocks(), " of ",
                     capacity(), " free"));
  }
  std::vector<int32_t> out(free_.end() - n, free_.end());
  std::reverse(out.begin(), out.end());
  free_.resize(free_.size() - n);
  for (int32_t b : out) ref_counts_[b] = 1;
  return out;
}

void BlockPool::AddRef(int32_t block) {
  KVS_CHECK(ref_counts_.at(block) > 0) << "AddRef on free block " << block;
  ++ref_counts_[block];
}

void BlockPool::Release(std::span<const int32_t> blocks) {
  for (int32_t b : blocks) {
    KVS_CHECK(ref_counts_.at(b) > 0) << "double release of block " << b;
    if (--ref_counts_[b] == 0) free_.push_back(b);
  }
}

int32_t BlockPool::ref_count(int32_t block) const {
  return ref_counts_.at(block);
}

void BlockPool::SetFence(int32_t block, uint64_t ticket) {
  uint64_t& f = fences_.at(block);
  f = std::max(f, ticket);
}

uint64_t BlockPool::MaxFence(std::span<const int32_t> blocks) const {
  uint64_t f = 0;
  for (int32_t b : blocks) f = std::max(f, fences_.at(b));
  return f;
}

absl::Status BlockPool::CheckInvariants() const {
  std::vector<bool> on_free_list(ref_counts_.size(), false);
  for (int32_t b : free_) {
    if (b < 0 || b >= capacity()) {
      return absl::InternalError(absl::StrCat("free list holds bad id ", b));
    }
    if (on_free_list[b]) {
      return absl::InternalError(absl::StrCat("block ", b, " free twice"));
    }
    on_free_list[b] = true;
  }
  int32_t zero = 0;
  for (int32_t b = 0; b < capacity(); ++b) {
    if (ref_counts_[b] < 0) {
      return absl::InternalError(absl::StrCat("block ", b, " negative count"));
    }
    if ((ref_counts_[b] == 0) != on_free_list[b]) {
      return absl::InternalError(
          absl::StrCat("block ", b, " count ", ref_counts_[b],
                       on_free_list[b] ? " but on" : " but not on",
                       " the free list"));
    }
    zero += ref_counts_[b] == 0;
  }
  if (zero + used_blocks() != capacity()) {
    return absl::InternalError("free + used != capacity");
  }
  return absl::OkStatus();
}

}  // namespace kvsession::session_store
