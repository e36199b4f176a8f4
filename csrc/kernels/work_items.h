// Which work items a kernel call runs, one at a time: all of them in order
// (one thread), or, for a thread team, whichever item no member has taken
// yet. A kernel keeps running items until none is left, so state it carries
// from one item to the next (the weights of the previous row group, written
// while the next one computes: weights_sink-inl.h) lives as long as the
// thread's whole share of the call. SIMD-free.
#pragma once

#include <atomic>
#include <cstdint>

namespace pyattn {

// The order a team takes items in, as a permutation of [0, items). Items are
// (batch element, row group, key split) with the split fastest (tiling.h).
// `longest_first` (for one split per item: items = batch elements x groups):
// each batch element's row groups from the last to the first (causal rows
// see more keys the later they are, so the call ends with short items
// instead of a long one that leaves the other threads idle; one batch
// element's groups stay together, so its keys and values are still in cache
// for the next). Never changes a result: items are independent.
struct ItemOrder {
  int64_t groups = 1;
  bool longest_first = false;
  int64_t operator()(int64_t i) const {
    return longest_first ? i / groups * groups + (groups - 1 - i % groups) : i;
  }
};

class WorkItems {
 public:
  // One thread: items 0, 1, ..., items - 1.
  explicit WorkItems(int64_t items) : items_(items) {}
  // A member of a team that shares `taken` (starting at 0).
  WorkItems(int64_t items, std::atomic<int64_t>* taken, ItemOrder order)
      : items_(items), taken_(taken), order_(order) {}
  // Items order(begin), ..., order(end - 1), one thread (for a driver that
  // hands out ranges of items itself).
  static WorkItems range(int64_t begin, int64_t end, ItemOrder order) {
    WorkItems w(end);
    w.own_ = begin;
    w.order_ = order;
    return w;
  }

  // The next item to run, or -1 when every item has been taken.
  int64_t next() {
    const int64_t i = taken_ ? taken_->fetch_add(1, std::memory_order_relaxed) : own_++;
    return i < items_ ? order_(i) : -1;
  }

 private:
  int64_t items_;
  int64_t own_ = 0;
  std::atomic<int64_t>* taken_ = nullptr;
  ItemOrder order_;
};

}  // namespace pyattn
