// Which keys the rows of a work item may see (Visibility: causal, window,
// kv_lengths), as intervals: each row's visible keys are ONE interval, so the
// loop visits only key blocks inside the union of its rows' intervals and
// fully hidden blocks are never touched. Included INSIDE a target namespace
// after work_item-inl.h; no include guard.

// The visible key interval [lo, hi) of query row i (see Visibility).
struct KeyInterval {
  int64_t lo, hi;
};

// The key position p(i) of query row i (see Visibility).
inline int64_t query_position(const Visibility& vis, int64_t i, int64_t L, int64_t n) {
  return vis.lower_right ? i + n - L : i;
}

inline KeyInterval visible_keys(const Visibility& vis, int64_t i, int64_t L, int64_t n) {
  const int64_t p = query_position(vis, i, L, n);
  int64_t lo = 0, hi = n;
  if (vis.causal) hi = imin(hi, p + 1);
  if (vis.window_left >= 0) lo = imax(lo, p - vis.window_left);
  if (vis.window_right >= 0) hi = imin(hi, p + vis.window_right + 1);
  if (hi < lo) hi = lo;
  return {lo, hi};
}

// The visible keys of one work item: per q_block tile the union
// [tlo, thi) of its rows' intervals within the item's key range [ks, ke)
// (empty: tlo >= thi), and the item's union [jlo, jhi). Rows are the item's
// group rows r = 0 .. rows - 1 (folded row g0 + r, query row (g0 + r) % L).
struct ItemKeys {
  const Visibility& vis;
  int64_t L, g0;
  int64_t n;              // valid keys of the batch element (kv_lengths, else S)
  int64_t jlo, jhi;
  int64_t tlo[kMaxTilesPerGroup], thi[kMaxTilesPerGroup];

  PYATTN_INLINE ItemKeys(const AttentionParams& p, const Tiling& t, const WorkItem& it)
      : vis(p.vis), L(p.L), g0(it.g0) {
    const int64_t S = p.S;
    n = p.vis.lengths.data
        ? static_cast<const int64_t*>(p.vis.lengths.data)[p.vis.lengths.batch_offset(p.batch, it.b)]
        : S;
    jlo = S;
    jhi = 0;
    for (int64_t ti = 0; ti < it.ntiles; ++ti) {
      tlo[ti] = S;
      thi[ti] = 0;
      const int64_t r1 = imin((ti + 1) * t.q_block, it.rows);
      for (int64_t r = ti * t.q_block; r < r1; ++r) {
        const KeyInterval iv = row(r);
        const int64_t lo = imax(iv.lo, it.ks), hi = imin(iv.hi, it.ke);
        if (hi > lo) {
          tlo[ti] = imin(tlo[ti], lo);
          thi[ti] = imax(thi[ti], hi);
        }
      }
      jlo = imin(jlo, tlo[ti]);
      jhi = imax(jhi, thi[ti]);
    }
  }

  // Group row r's visible keys, and its key position p(i).
  KeyInterval row(int64_t r) const { return visible_keys(vis, (g0 + r) % L, L, n); }
  int64_t position(int64_t r) const { return query_position(vis, (g0 + r) % L, L, n); }

  // The first key block (of k_block keys) the item visits.
  int64_t first_block(int64_t k_block) const { return jlo < jhi ? jlo / k_block : 0; }
  // Whether tile ti sees a key of [j0, j0 + nk).
  bool tile_sees(int64_t ti, int64_t j0, int64_t nk) const { return !(thi[ti] <= j0 || tlo[ti] >= j0 + nk); }
  // (tile, key block) pairs the item visits.
  int64_t tile_blocks(int64_t ntiles, int64_t k_block) const {
    int64_t count = 0;
    for (int64_t ti = 0; ti < ntiles; ++ti)
      if (thi[ti] > tlo[ti]) count += (thi[ti] - 1) / k_block - tlo[ti] / k_block + 1;
    return count;
  }
};
