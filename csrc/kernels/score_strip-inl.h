// The strip step of the attention loop: a strip of Shape::strip query rows
// against one key block, from scores to P V. The strip's scores stay in L1
// from the product through the softmax to P V, and each strip stops at its
// own last visible key (causal: its diagonal), so causal tiles waste at most
// a strip. Included INSIDE a target namespace after the other parts of the
// loop (score_variants-inl.h, visible_keys-inl.h, softmax_step-inl.h,
// pv_product-inl.h, weights_sink-inl.h); no include guard.
//
// Per strip:  S = scorer.scores (strip x round_up(tk, kPanelWidth)), then
// per row with a visible key in the block:
//   the epilogue's transform (softcap), the mask (bool: -inf where False;
//   float: + bias by add_bias_rule, fused into the scorer's tile stores when
//   it can), the epilogue's bias (ALiBi), -inf outside the row's visible
//   interval (only boundary blocks pay), the online softmax step, and the
//   weights sink takes P; then P V for the whole strip.
// A row that sees nothing in the block gets P = 0 and leaves its state alone.

template <class V, class Shape, class Scorer, class Var>
struct ScoreStrip {
  using T = typename V::T;
  static constexpr int W = V::W;
  static constexpr int PW = Scorer::kPanelWidth;  // score columns come in multiples of this
  static constexpr int64_t kStrip = Shape::strip;

  const AttentionParams& p;
  Scorer& scorer;
  const ScoreEpilogue<V, Var>& epi;
  const RowState<T>& state;
  T* st;                  // the strip's scores (kStrip rows of ld_s)
  int64_t ld_s;
  bool log2;              // scores in log2 units
  bool fuse_bias;         // the scorer adds the float mask as it stores scores
  int64_t mask_esz;       // bytes per mask element
  // The current item:
  const char* mask = nullptr;  // the batch element's mask
  int64_t g0 = 0, grows = 0;

  ScoreStrip(const AttentionParams& params, const Tiling& t, T* scratch, Scorer& sc,
             const ScoreEpilogue<V, Var>& e, const RowState<T>& rs, bool log2_units)
      : p(params), scorer(sc), epi(e), state(rs), st(scratch + t.off_s),
        ld_s(round_up(t.k_block, kPadElems)), log2(log2_units) {
    mask_esz = p.mask_kind == MaskKind::boolean ? 1 : int64_t(sizeof(T));
    // A float mask with contiguous rows is added by a scorer that can (as it
    // stores each score tile: sdpa-inl.h) instead of in a pass of its own
    // (AVX-512, L = 2048, 1 thread: mask / no-mask time 1.16 -> 1.12).
    // Not when an epilogue transforms the scores (softcap): that comes
    // before the mask's bias.
    fuse_bias = p.mask_kind == MaskKind::additive && p.mask.col_stride == 1 && !Var::kTransforms;
  }

  PYATTN_INLINE void begin_item(const WorkItem& it) {
    g0 = it.g0;
    grows = it.rows;
    mask = p.mask_kind == MaskKind::none ? nullptr
        : static_cast<const char*>(p.mask.data) + p.mask.batch_offset(p.batch, it.b) * mask_esz;
  }

  // Group rows [s0, s0 + srows) against keys [j0, j0 + nk) of key block kb.
  template <class SV>
  PYATTN_INLINE void run(int64_t s0, int64_t srows, int64_t kb, int64_t j0, int64_t nk,
                         const ItemKeys& keys, const ValueRows<T, SV>& vals, WeightsSink<V>& weights) {
    // Each row's visible keys within the block, [rlo, rhi) relative to j0
    // ([j0, j0 + nk) lies in the item's key range), and the strip's last.
    int64_t rlo[kStrip], rhi[kStrip];
    int64_t tk = 0;
    for (int64_t r = 0; r < srows; ++r) {
      const KeyInterval iv = keys.row(s0 + r);
      rlo[r] = imax(iv.lo - j0, 0);
      rhi[r] = imin(iv.hi - j0, nk);
      if (rhi[r] > rlo[r]) tk = imax(tk, rhi[r]);
    }
    if (tk == 0) return;  // the strip sees nothing in this block
    const int64_t tcols = round_up(tk, PW);
    bool biased = false;  // the scorer added the float mask
    if constexpr (Scorer::kAddsBias && !Var::kTransforms) {
      if (fuse_bias) {
        const T* brows[kStrip];
        for (int64_t r = 0; r < srows; ++r)
          brows[r] = reinterpret_cast<const T*>(mask) + p.mask.row_offset(g0 + s0 + r, p.L) + j0;
        biased = scorer.scores_biased(s0, srows, tk, st, ld_s, brows);
      }
    }
    if (!biased) scorer.scores(s0, srows, tk, st, ld_s);
    for (int64_t r = 0; r < srows; ++r) {
      const int64_t gr = s0 + r;  // row within the group
      T* s = st + r * ld_s;
      const int64_t lo = rlo[r], hi = imin(rhi[r], tk);
      if (hi <= lo) {  // row hidden in this whole block: contributes nothing
        for (int64_t c = 0; c < tcols; ++c) s[c] = T(0);
        continue;
      }
      const int64_t ecols = round_up(tk, W);  // (<= tcols: whole vectors)
      if constexpr (Var::kTransforms) epi.transform(s, ecols);
      if (mask && !biased) apply_mask(gr, j0, tk, s);
      if constexpr (Var::kBiases) epi.add_bias(s, ecols, g0 + gr, keys.position(gr), j0);
      for (int64_t c = 0; c < lo; ++c) s[c] = neg_inf<T>();
      for (int64_t c = hi; c < tcols; ++c) s[c] = neg_inf<T>();
      T* acc_row = state.acc + gr * state.ev_pad;
      const T m_use = log2 ? softmax_step<V, true>(s, tcols, state.m + gr, state.l + gr, acc_row, state.ev_pad)
                           : softmax_step<V, false>(s, tcols, state.m + gr, state.l + gr, acc_row, state.ev_pad);
      weights.stage_block(gr, kb, j0, nk, tk, s, m_use);
    }
    pv_strip<V, Shape>(st, ld_s, srows, tk, nk, vals, p.Ev, state.acc + s0 * state.ev_pad, state.ev_pad);
  }

  // The explicit mask of group row gr on its scores s[0, tk) of keys from j0.
  // Mask rows are far apart (a row of S entries each): the row kMaskAhead
  // ahead (across strips) is fetched while this one is applied, so it is in
  // cache in time.
  PYATTN_INLINE void apply_mask(int64_t gr, int64_t j0, int64_t tk, T* s) const {
    constexpr int64_t kMaskAhead = 2;
    const int64_t ra = gr + kMaskAhead < grows ? gr + kMaskAhead : gr;
    const int64_t L = p.L;
    apply_mask_row<V>(p.mask_kind, mask + (p.mask.row_offset(g0 + gr, L) + j0 * p.mask.col_stride) * mask_esz,
                      p.mask.col_stride, tk, s,
                      mask + (p.mask.row_offset(g0 + ra, L) + j0 * p.mask.col_stride) * mask_esz);
  }
};
