#include "session_store/block_pool.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvsession::session_store {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(BlockPoolTest, AllocatesLowIdsFirstAndCounts) {
  BlockPool pool(BlockPool::Options{.num_blocks = 8});
  EXPECT_EQ(pool.capacity(), 8);
  absl::StatusOr<std::vector<int32_t>> a = pool.Allocate(3);
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(*a, ElementsAre(0, 1, 2));
  EXPECT_EQ(pool.free_blocks(), 5);
  EXPECT_EQ(pool.used_blocks(), 3);
  EXPECT_EQ(pool.ref_count(1), 1);
  EXPECT_TRUE(pool.CheckInvariants().ok());
}

TEST(BlockPoolTest, ExhaustionTakesNothing) {
  BlockPool pool(BlockPool::Options{.num_blocks = 4});
  ASSERT_TRUE(pool.Allocate(3).ok());
  absl::StatusOr<std::vector<int32_t>> b = pool.Allocate(2);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(b.status().message(), HasSubstr("need 2 KV blocks, 1 of 4 free"));
  EXPECT_EQ(pool.free_blocks(), 1);
  EXPECT_TRUE(pool.CheckInvariants().ok());
}

TEST(BlockPoolTest, SharedBlockIsFreeAfterLastRelease) {
  BlockPool pool(BlockPool::Options{.num_blocks = 2});
  std::vector<int32_t> b = *pool.Allocate(1);
  pool.AddRef(b[0]);
  EXPECT_EQ(pool.ref_count(b[0]), 2);
  pool.Release(b);
  EXPECT_EQ(pool.free_blocks(), 1);
  pool.Release(b);
  EXPECT_EQ(pool.free_blocks(), 2);
  EXPECT_TRUE(pool.CheckInvariants().ok());
  // The most recently freed block is handed out first.
  EXPECT_THAT(*pool.Allocate(1), ElementsAre(b[0]));
}

TEST(BlockPoolTest, EmptyPool) {
  BlockPool pool(BlockPool::Options{.num_blocks = 0});
  EXPECT_TRUE(pool.Allocate(0).ok());
  EXPECT_FALSE(pool.Allocate(1).ok());
  EXPECT_TRUE(pool.CheckInvariants().ok());
}

}  // namespace
}  // namespace kvsession::session_store
