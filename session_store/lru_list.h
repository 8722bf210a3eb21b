// Intrusive doubly-linked LRU list. The links live inside the element (like
// the free block queue of vLLM), so linking, unlinking and touching are O(1)
// and never allocate: eviction runs in the engine's step loop.
//
//   struct Item { LruNode<Item> node; ... };
//   LruList<Item, &Item::node> lru;
//   lru.PushBack(&item);   // most recently used at the back
//   lru.MoveToBack(&item); // touch
//   Item* victim = lru.Front();
//
// An element is in at most one list per node; the node records which list
// holds it, so Contains() is exact even with several lists of one type.
// The list does not own its elements; an element must be removed before it
// is destroyed or moved.
#ifndef KVSESSION_SESSION_STORE_LRU_LIST_H_
#define KVSESSION_SESSION_STORE_LRU_LIST_H_

#include <cstddef>

#include "kernels/check.h"

namespace kvsession::session_store {

template <typename T>
class LruNode {
 public:
  LruNode() = default;
  // Copying links would corrupt the list that holds the original.
  LruNode(const LruNode&) = delete;
  LruNode& operator=(const LruNode&) = delete;

  bool linked() const { return list_ != nullptr; }

 private:
  template <typename U, LruNode<U> U::*kNode>
  friend class LruList;

  T* prev_ = nullptr;
  T* next_ = nullptr;
  const void* list_ = nullptr;  // the list holding this node, or null
};

template <typename T, LruNode<T> T::*kNode>
class LruList {
 public:
  LruList() = default;
  LruList(const LruList&) = delete;
  LruList& operator=(const LruList&) = delete;
  // Elements point back at their list, so a non-empty list cannot die
  // without leaving dangling members behind.
  ~LruList() { KVS_CHECK(size_ == 0) << "LruList destroyed with members"; }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  bool Contains(const T& t) const { return (t.*kNode).list_ == this; }

  // Least recently used element, or null when empty.
  T* Front() const { return head_; }
  // Most recently used element, or null when empty.
  T* Back() const { return tail_; }
  // The element after t (more recently used), or null at the back.
  T* Next(const T& t) const {
    KVS_CHECK(Contains(t));
    return (t.*kNode).next_;
  }

  void PushBack(T* t) {
    LruNode<T>& n = t->*kNode;
    KVS_CHECK(!n.linked()) << "element already in a list";
    n.list_ = this;
    n.prev_ = tail_;
    n.next_ = nullptr;
    if (tail_ != nullptr) {
      (tail_->*kNode).next_ = t;
    } else {
      head_ = t;
    }
    tail_ = t;
    ++size_;
  }

  void Remove(T* t) {
    LruNode<T>& n = t->*kNode;
    KVS_CHECK(Contains(*t)) << "element not in this list";
    if (n.prev_ != nullptr) {
      (n.prev_->*kNode).next_ = n.next_;
    } else {
      head_ = n.next_;
    }
    if (n.next_ != nullptr) {
      (n.next_->*kNode).prev_ = n.prev_;
    } else {
      tail_ = n.prev_;
    }
    n.prev_ = n.next_ = nullptr;
    n.list_ = nullptr;
    --size_;
  }

  // Marks t as most recently used.
  void MoveToBack(T* t) {
    if (tail_ == t) {
      KVS_CHECK(Contains(*t));
      return;
    }
    Remove(t);
    PushBack(t);
  }

  // Removes and returns the least recently used element (null when empty).
  T* PopFront() {
    T* t = head_;
    if (t != nullptr) Remove(t);
    return t;
  }

 private:
  T* head_ = nullptr;
  T* tail_ = nullptr;
  size_t size_ = 0;
};

}  // namespace kvsession::session_store

#endif  // KVSESSION_SESSION_STORE_LRU_LIST_H_
