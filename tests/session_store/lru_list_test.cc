#include "session_store/lru_list.h"

#include <algorithm>
#include <list>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvsession::session_store {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::IsEmpty;

struct Item {
  int value = 0;
  LruNode<Item> node;
};
using List = LruList<Item, &Item::node>;

std::vector<int> Values(const List& list) {
  std::vector<int> out;
  for (const Item* it = list.Front(); it != nullptr; it = list.Next(*it)) {
    out.push_back(it->value);
  }
  return out;
}

// Unlinks everything so the list's destructor check passes.
void Clear(List& list) {
  while (list.PopFront() != nullptr) {
  }
}

TEST(LruListTest, EmptyList) {
  List list;
  EXPECT_TRUE(list.empty());
  EXPECT_EQ(list.size(), 0u);
  EXPECT_EQ(list.Front(), nullptr);
  EXPECT_EQ(list.Back(), nullptr);
  EXPECT_EQ(list.PopFront(), nullptr);
}

TEST(LruListTest, PushBackKeepsInsertionOrder) {
  std::vector<Item> items(4);
  List list;
  for (int i = 0; i < 4; ++i) {
    items[i].value = i;
    list.PushBack(&items[i]);
  }
  EXPECT_EQ(list.size(), 4u);
  EXPECT_EQ(list.Front(), &items[0]);
  EXPECT_EQ(list.Back(), &items[3]);
  EXPECT_THAT(Values(list), ElementsAre(0, 1, 2, 3));
  Clear(list);
}

TEST(LruListTest, RemoveFrontMiddleBack) {
  std::vector<Item> items(5);
  List list;
  for (int i = 0; i < 5; ++i) {
    items[i].value = i;
    list.PushBack(&items[i]);
  }
  list.Remove(&items[2]);
  EXPECT_THAT(Values(list), ElementsAre(0, 1, 3, 4));
  list.Remove(&items[0]);
  EXPECT_THAT(Values(list), ElementsAre(1, 3, 4));
  list.Remove(&items[4]);
  EXPECT_THAT(Values(list), ElementsAre(1, 3));
  EXPECT_EQ(list.Front(), &items[1]);
  EXPECT_EQ(list.Back(), &items[3]);
  EXPECT_FALSE(items[2].node.linked());
  EXPECT_FALSE(list.Contains(items[0]));
  list.Remove(&items[1]);
  list.Remove(&items[3]);
  EXPECT_TRUE(list.empty());
  EXPECT_EQ(list.Front(), nullptr);
  EXPECT_EQ(list.Back(), nullptr);
}

TEST(LruListTest, MoveToBackTouches) {
  std::vector<Item> items(3);
  List list;
  for (int i = 0; i < 3; ++i) {
    items[i].value = i;
    list.PushBack(&items[i]);
  }
  list.MoveToBack(&items[0]);
  EXPECT_THAT(Values(list), ElementsAre(1, 2, 0));
  list.MoveToBack(&items[0]);  // already last
  EXPECT_THAT(Values(list), ElementsAre(1, 2, 0));
  list.MoveToBack(&items[2]);
  EXPECT_THAT(Values(list), ElementsAre(1, 0, 2));
  EXPECT_EQ(list.size(), 3u);
  EXPECT_EQ(list.PopFront(), &items[1]);
  EXPECT_THAT(Values(list), ElementsAre(0, 2));
  Clear(list);
}

TEST(LruListTest, ContainsDistinguishesLists) {
  Item a, b;
  List first, second;
  first.PushBack(&a);
  second.PushBack(&b);
  EXPECT_TRUE(first.Contains(a));
  EXPECT_FALSE(first.Contains(b));
  EXPECT_TRUE(second.Contains(b));
  EXPECT_FALSE(second.Contains(a));
  // Moving an element between lists.
  first.Remove(&a);
  second.PushBack(&a);
  EXPECT_TRUE(second.Contains(a));
  EXPECT_TRUE(first.empty());
  EXPECT_EQ(second.size(), 2u);
  Clear(second);
}

TEST(LruListTest, ReinsertAfterRemove) {
  Item a;
  a.value = 7;
  List list;
  for (int i = 0; i < 3; ++i) {
    list.PushBack(&a);
    EXPECT_THAT(Values(list), ElementsAre(7));
    list.Remove(&a);
    EXPECT_THAT(Values(list), IsEmpty());
  }
}

TEST(LruListDeathTest, DoubleInsertDies) {
  Item a;
  List list;
  list.PushBack(&a);
  EXPECT_DEATH(list.PushBack(&a), "already in a list");
  list.Remove(&a);
  EXPECT_DEATH(list.Remove(&a), "not in this list");
}

// Random operations against std::list as the model.
TEST(LruListTest, MatchesModelUnderRandomOperations) {
  constexpr int kItems = 32;
  std::vector<Item> items(kItems);
  for (int i = 0; i < kItems; ++i) items[i].value = i;
  List list;
  std::list<int> model;
  std::mt19937 rng(42);
  for (int step = 0; step < 20000; ++step) {
    Item& it = items[rng() % kItems];
    const bool in = list.Contains(it);
    ASSERT_EQ(in,
              std::find(model.begin(), model.end(), it.value) != model.end());
    switch (rng() % 4) {
      case 0:
        if (!in) {
          list.PushBack(&it);
          model.push_back(it.value);
        }
        break;
      case 1:
        if (in) {
          list.Remove(&it);
          model.remove(it.value);
        }
        break;
      case 2:
        if (in) {
          list.MoveToBack(&it);
          model.remove(it.value);
          model.push_back(it.value);
        }
        break;
      case 3:
        if (Item* f = list.PopFront(); f != nullptr) {
          ASSERT_EQ(f->value, model.front());
          model.pop_front();
        } else {
          ASSERT_TRUE(model.empty());
        }
        break;
    }
    ASSERT_EQ(list.size(), model.size());
    if (step % 64 == 0) {
      ASSERT_THAT(Values(list), ElementsAreArray(model));
      if (!model.empty()) {
        ASSERT_EQ(list.Back()->value, model.back());
      }
    }
  }
  Clear(list);
}

}  // namespace
}  // namespace kvsession::session_store
