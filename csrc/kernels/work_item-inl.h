// The work-item decoder of the attention loop: item number -> batch element,
// query rows, key range. Included INSIDE a target namespace after
// kernel_common-inl.h; no include guard.
//
// Items are (batch element, row group, key split), split fastest (tiling.h).
// A row group is group_rows folded query rows of one batch element, in tiles
// of q_block rows; a key split is one split_keys chunk of the keys (split-KV
// decoding: tiling.cpp), or all S keys when the call has one split.

struct WorkItem {
  int64_t index;          // the item's number (its slot of split state)
  int64_t b;              // batch element
  int64_t g0, rows;       // folded query rows [g0, g0 + rows)
  int64_t ntiles;         // q_block tiles of those rows (<= kMaxTilesPerGroup)
  int64_t ks, ke;         // keys it may look at: [ks, ke)
};

struct WorkItemDecoder {
  const Tiling& t;
  int64_t rows_total;     // folded query rows per batch element (fold * L)
  int64_t S;

  PYATTN_INLINE WorkItem operator()(int64_t item) const {
    WorkItem w;
    w.index = item;
    w.b = item / (t.num_groups * t.num_splits);
    w.g0 = (item / t.num_splits % t.num_groups) * t.group_rows;
    const int64_t split = item % t.num_splits;
    w.ks = t.num_splits > 1 ? split * t.split_keys : 0;
    w.ke = t.num_splits > 1 ? imin(S, w.ks + t.split_keys) : S;
    w.rows = imin(t.group_rows, rows_total - w.g0);
    w.ntiles = ceil_div(w.rows, t.q_block);
    return w;
  }
};
