// The weights sink of the attention loop: where the probabilities go when
// the call returns the attention weights. Included INSIDE a target namespace
// after softmax_step-inl.h; no include guard.
//
// Each key block's probabilities P (relative to that block's running max
// m') are staged as they are made, in scratch (or, for very long rows, in
// `weights` itself: tiling.cpp), with m'. When the item's rows are finished,
// each block's factor becomes e^(m' - top) / den (row_finish.h) and the rows
// are written rescaled by it -- with two scratch buffers a few rows per
// (tile, key block) while the thread's next item computes, so that the
// writes overlap work (PendingWeights). No score is computed twice.
//
// Interface (all a no-op without weights):
//   begin_item(it, keys)     buffers of a new item, the pace of the pending
//                            rows, page pre-faulting, block maxima reset;
//   write_pending()          a few more of the previous item's rows (once
//                            per (tile, key block));
//   stage_block(gr, ...)     one row's probabilities of one key block;
//   finish_row(gr, fin)      the row's block factors, once it is finished;
//   finish_item(it, jhi)     the item's rows become the pending ones;
//   flush()                  writes whatever is pending (end of the call).

// A row group's weights waiting to be written: rows [next, rows) of the
// group at g0 of the batch element whose weights start at wrows. Row r's
// probabilities are src + r * ld_src (src null: already in the weights array,
// rescaled in place); key block kb of it is scaled by fac[r * num_k_blocks +
// kb], or is 0 where that is -inf; columns from jhi on are 0.
template <class T>
struct PendingWeights {
  T* wrows = nullptr;
  const T* src = nullptr;
  int64_t ld_src = 0;
  const T* fac = nullptr;
  int64_t g0 = 0, rows = 0, next = 0, jhi = 0;
};

// Writes up to `count` more rows of `pw`. With two buffers the rows are
// written while the next item computes, with non-temporal stores where whole
// aligned vectors fit (ordinary stores would evict that item's data from the
// caches); else at the item's end, with ordinary stores.
template <class V, class T = typename V::T>
inline void write_weight_rows(const AttentionParams& p, const Tiling& t, PendingWeights<T>& pw,
                              int64_t count) {
  const bool streaming = t.wp_buffers == 2;
  constexpr int W = V::W;
  const int64_t end = imin(pw.rows, pw.next + count);
  for (; pw.next < end; ++pw.next) {
    const int64_t r = pw.next;
    T* w = pw.wrows + p.weights.row_offset(pw.g0 + r, p.L);
    const T* src = pw.src ? pw.src + r * pw.ld_src : w;
    const T* f = pw.fac + r * t.num_k_blocks;
    int64_t done = 0;  // columns [0, done) are final
    for (int64_t kb = 0; kb < t.num_k_blocks; ++kb) {
      if (f[kb] == neg_inf<T>()) continue;
      const int64_t j0 = kb * t.k_block;
      const int64_t j1 = imin((kb + 1) * t.k_block, pw.jhi);
      for (int64_t c = done; c < j0; ++c) w[c] = T(0);
      const typename V::R vf = V::set1(f[kb]);
      int64_t c = j0;
      if (streaming) {
        for (; c < j1 && reinterpret_cast<uintptr_t>(w + c) % (W * sizeof(T)) != 0; ++c) w[c] = src[c] * f[kb];
        for (; c + W <= j1; c += W) V::store_nt(w + c, V::mul(V::load(src + c), vf));
      }
      for (; c < j1; ++c) w[c] = src[c] * f[kb];
      done = j1;
    }
    for (int64_t c = done; c < p.S; ++c) w[c] = T(0);
  }
  if (streaming) V::stores_done();
}

template <class V>
struct WeightsSink {
  using T = typename V::T;

  const AttentionParams& p;
  const Tiling& t;
  T* scratch;
  const bool on;          // weights wanted
  int buf = 0;            // the scratch buffer of the current item (of t.wp_buffers)
  T* wmax = nullptr;      // per (row, key block): the block's max, then its factor
  T* wp = nullptr;        // staged probabilities (null: staged in the weights array)
  T* wrows = nullptr;     // the batch element's weights
  int64_t g0 = 0;         // the current item's first row
  int64_t pace = 0;       // pending rows written per (tile, key block)
  PendingWeights<T> pending;

  WeightsSink(const AttentionParams& params, const Tiling& tiling, T* scratch_)
      : p(params), t(tiling), scratch(scratch_), on(params.weights.data != nullptr) {}

  PYATTN_INLINE void begin_item(const WorkItem& it, const ItemKeys& keys) {
    if (!on) return;
    const int64_t L = p.L, S = p.S;
    g0 = it.g0;
    wrows = static_cast<T*>(p.weights.data) + p.weights.batch_offset(p.batch, it.b);
    // The previous item's weights (if still pending): so many rows per
    // (tile, key block) of this item that they are all written by its end.
    wmax = scratch + t.off_wmax + buf * t.group_rows * t.num_k_blocks;
    wp = t.ld_wp > 0 ? scratch + t.off_wp + buf * t.group_rows * t.ld_wp : nullptr;
    pace = ceil_div(pending.rows - pending.next, imax(keys.tile_blocks(it.ntiles, t.k_block), 1));
    if (t.wp_buffers == 2 && S > 0) {
      // Fault in this item's rows of the weights array now, while little of
      // use is in the caches: the kernel zeroes each new page through the
      // caches, which mid-item evicted the data the item works on (L = 2048:
      // 8% slower). Writing zeros is safe: every column of these rows is
      // written again when they are finalised.
      for (int64_t r = 0; r < it.rows; ++r) {
        T* w = wrows + p.weights.row_offset(g0 + r, L);
        for (int64_t c = 0; c < S; c += 4096 / int64_t(sizeof(T))) w[c] = T(0);
        w[S - 1] = T(0);
      }
    }
    for (int64_t r = 0; r < it.rows; ++r)
      for (int64_t kb = 0; kb < t.num_k_blocks; ++kb) wmax[r * t.num_k_blocks + kb] = neg_inf<T>();
  }

  PYATTN_INLINE void write_pending() {
    if (pending.next < pending.rows) write_weight_rows<V>(p, t, pending, pace);
  }

  // Group row gr's probabilities s[0, tk) of key block kb (keys [j0, j0 +
  // nk); the rest are 0), relative to m_use.
  PYATTN_INLINE void stage_block(int64_t gr, int64_t kb, int64_t j0, int64_t nk, int64_t tk, const T* s,
                                 T m_use) {
    if (!on) return;
    T* w = (wp ? wp + gr * t.ld_wp : wrows + p.weights.row_offset(g0 + gr, p.L)) + j0;
    for (int64_t c = 0; c < tk; ++c) w[c] = s[c];
    for (int64_t c = tk; c < nk; ++c) w[c] = T(0);
    wmax[gr * t.num_k_blocks + kb] = m_use;
  }

  // Group row gr is finished (fin): blocks its tile processed hold
  // exp(s - m_block) (2^ of the difference in log2 units); they are rescaled
  // to exp(s - top) / den, everything else is an exact 0 (write_weight_rows).
  PYATTN_INLINE void finish_row(int64_t gr, const RowFinish<T>& fin, bool log2) {
    if (!on) return;
    const T inv = fin.inv;
    const T m_fin = fin.top == neg_inf<T>() ? T(0) : fin.top;
    T* f = wmax + gr * t.num_k_blocks;
    for (int64_t kb = 0; kb < t.num_k_blocks; ++kb) {
      const T wm = f[kb];
      f[kb] = fin.empty || wm == neg_inf<T>() ? neg_inf<T>()
                                              : (log2 ? std::exp2(wm - m_fin) : std::exp(wm - m_fin)) * inv;
    }
  }

  // The item's rows are finished; keys from jhi on are hidden from all of them.
  PYATTN_INLINE void finish_item(const WorkItem& it, int64_t jhi) {
    if (!on) return;
    write_weight_rows<V>(p, t, pending, pending.rows);  // what is left of the previous item's
    pending = PendingWeights<T>{wrows, wp, t.ld_wp, wmax, it.g0, it.rows, 0, jhi};
    if (t.wp_buffers == 2)
      buf ^= 1;  // written during the next item
    else
      write_weight_rows<V>(p, t, pending, it.rows);  // its buffer is needed for the next item
  }

  void flush() { write_weight_rows<V>(p, t, pending, pending.rows); }
};
