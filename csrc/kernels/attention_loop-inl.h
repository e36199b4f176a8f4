// The blocked online-softmax loop shared by every attention op, written once
// over the Vec layer, a Scorer (how the op scores a query block against a
// key block: sdpa-inl.h, additive-inl.h), a key/value block source and a
// Variant (kernel_switch.h: the score epilogue, score_variants-inl.h).
// Included INSIDE a target namespace after its parts (target_kernels-inl.h
// lists the order); no include guard.
//
// attention_loop is the orchestrator; each step is a part with one job:
//   WorkItemDecoder   item -> batch element, query rows, key range
//                     (work_item-inl.h);
//   ItemKeys          the rows' visible-key intervals, per tile and for the
//                     item (visible_keys-inl.h): causal / window /
//                     kv_lengths make each row's visible keys ONE interval,
//                     so fully hidden key blocks are never touched;
//   KVBlockSource     key block -> key rows for the scorer, value rows for
//                     P V, in place or converted, int8 scales
//                     (kv_block_source-inl.h);
//   ScoreStrip        a strip of rows against a key block: scores ->
//                     epilogue -> mask -> softmax step -> P V
//                     (score_strip-inl.h, softmax_step-inl.h,
//                     pv_product-inl.h);
//   WeightsSink       where the probabilities go when weights are asked for
//                     (weights_sink-inl.h);
//   SplitState        split-KV decoding: an item's partial (m, l, acc);
//   finish_rows       out = acc / l, lse = m + log l (row_finish.h: the
//                     sink's denominator term, once); rows that saw no key:
//                     out 0, lse -inf (lse = sink with a sink).
// Helpers shared by the kernels: kernel_common-inl.h.
//
// One work item = (batch element, row group, key split):
//   1. the parts begin the item (scorer.begin_item packs the query rows);
//   2. for each key block of k_block keys inside the item's visible union:
//      the scorer packs the block's keys, the source gives its values, and
//      each tile (q_block rows) that sees the block runs its strips;
//   3. the rows are finished, or (key splits) their partial state is kept
//      for the driver's merge_splits, which finishes them the same way.
// The online softmax, per row and block:
//   m' = max(m, rowmax S), P = exp(S - m') (2^ in log2 units: `log2`),
//   l = l e^(m - m') + sum P,  acc = acc e^(m - m') + P V.
//
// The Scorer contract (DotScorer in sdpa-inl.h, AdditiveScorer in
// additive-inl.h):
//   kPanelWidth                 score columns come in multiples of it;
//   kLog2Scores                 it can make scores in log2 units (folding
//                               log2 e into its scale) when scores_in_log2(p);
//   begin_item(b, g0, rows)     prepare query rows [g0, g0 + rows) of batch b;
//   pack_keys(keys, nk)         prepare the block's keys (KeyRows: rows
//                               [0, nk) of the block, from the block source;
//                               once per key block);
//   scores(r0, rows, nk, st, ld_s)  scores of group rows [r0, r0 + rows)
//                               against the packed keys into st (row stride
//                               ld_s), round_up(nk, kPanelWidth) columns;
//   kAddsBias: it also has scores_biased(r0, rows, nk, st, ld_s, bias_rows),
//                               the same plus a float mask (row r's biases
//                               for these keys at bias_rows[r], added by
//                               add_bias_rule); false if it did not add them
//                               (the loop then does). Not used when the
//                               epilogue transforms scores (softcap comes
//                               before the mask's bias).
// The score epilogue hook (ScoreEpilogue<V, Variant>, score_variants-inl.h):
//   begin_item(b)                          per work item;
//   transform(s, ncols)                    one row's raw scores, before the mask;
//   add_bias(s, ncols, r, pos, j0)         the same row after the mask (folded
//                                          row r, key position pos, keys from j0).
// Both run only on rows with a visible key in the block, over whole vectors;
// the loop then hides what the row may not see, so neither can reveal a key.
//
// Numerics: accumulation in the input precision (float32 or float64); 2^x
// from vec_math-inl.h (<= 2 ulp; natural-unit scores: see the README). Each
// row's arithmetic depends only on the tiling, never on the thread that runs
// it: results are bitwise identical for every thread count.

// Split-KV decoding: an item covers one key split, and its rows' partial
// state (m, l, acc[0, Ev)) goes to the driver's merge_splits: Ev + 2 values
// per row, group_rows rows per item, at the item's index.
template <class T>
struct SplitState {
  T* base;                // null: one split, rows are finished by the loop
  int64_t group_rows, Ev;

  PYATTN_INLINE void store(const WorkItem& it, const RowState<T>& rs) const {
    T* part = base + it.index * group_rows * (Ev + 2);
    for (int64_t gr = 0; gr < it.rows; ++gr) {
      T* row = part + gr * (Ev + 2);
      row[0] = rs.m[gr];
      row[1] = rs.l[gr];
      for (int64_t c = 0; c < Ev; ++c) row[2 + c] = rs.acc[gr * rs.ev_pad + c];
    }
  }
};

// Finishes the item's rows (row_finish.h: the sink joins the denominator
// here): writes out and lse, and hands each row's finish to the weights.
template <class V, class T = typename V::T>
PYATTN_INLINE void finish_rows(const AttentionParams& p, const WorkItem& it, const RowState<T>& rs, bool log2,
                               WeightsSink<V>& weights) {
  const int64_t L = p.L;
  const StridedArray& sinks = p.variants.sinks;
  const T* sink_b = sinks.data ? static_cast<const T*>(sinks.data) + sinks.batch_offset(p.batch, it.b) : nullptr;
  T* out = static_cast<T*>(p.out.data) + p.out.batch_offset(p.batch, it.b);
  for (int64_t gr = 0; gr < it.rows; ++gr) {
    const int64_t i = it.g0 + gr;
    const T sink = sink_b ? sink_b[(i / L) * sinks.fold_stride] : neg_inf<T>();
    const RowFinish<T> fin = finish_row(rs.m[gr], rs.l[gr], sink, log2);
    const T oscale = fin.carry * fin.inv;  // (= inv without a sink)
    T* o = out + p.out.row_offset(i, L);
    const T* a = rs.acc + gr * rs.ev_pad;
    for (int64_t c = 0; c < p.Ev; ++c) o[c] = a[c] * oscale;
    if (p.lse.data) {
      T* lse = static_cast<T*>(p.lse.data) + p.lse.batch_offset(p.batch, it.b);
      lse[p.lse.row_offset(i, L)] = fin.lse;
    }
    weights.finish_row(gr, fin, log2);
  }
}

// Runs the work items it takes from `work` of an attention op whose scores
// come from `Scorer` (the contract above) over the keys and values of `kv`
// (KVBlockSource's interface); Var: the score variants compiled in
// (kernel_switch.h). Key blocks are aligned to k_block, packed once per item,
// and scored tile by tile (q_block rows) against each.
template <class V, class Shape, class Scorer, class KV, class Var = PlainVariant>
void attention_loop(const AttentionParams& p, Scorer& scorer, KV& kv, const Tiling& t, WorkItems& work,
                    typename V::T* scratch) {
  using T = typename V::T;
  // Scores in log2 units: a Scorer with kLog2Scores folds log2 e into its
  // scores when scores_in_log2(p) (the dot-product scorer: into the query
  // scale), so the softmax takes 2^x (vexp2; natural units take 2^(x log2 e),
  // one multiplication more per vector) and m is turned back (m ln 2) for
  // the lse. Not with a float mask, whose biases (up to the largest float:
  // finfo.min masks) would overflow once multiplied by log2 e; additive
  // scores stay natural too.
  const bool log2 = Scorer::kLog2Scores && scores_in_log2(p);
  static_assert(kPadElems % Scorer::kPanelWidth == 0, "panel width must divide kPadElems");
  constexpr int64_t kStrip = Shape::strip;  // rows scored, softmaxed and multiplied by V together

  const WorkItemDecoder decode{t, p.fold * p.L, p.S};
  const RowState<T> state{scratch + t.off_m, scratch + t.off_l, scratch + t.off_acc, t.ev_pad};
  const SplitState<T> split{t.num_splits > 1 ? static_cast<T*>(t.split_state) : nullptr, t.group_rows, p.Ev};
  ScoreEpilogue<V, Var> epi(p, log2);
  ScoreStrip<V, Shape, Scorer, Var> strip(p, t, scratch, scorer, epi, state, log2);
  WeightsSink<V> weights(p, t, scratch);

  WorkItems items = work;  // a local copy: its counter stays in a register
  for (int64_t index = items.next(); index >= 0; index = items.next()) {
    const WorkItem it = decode(index);
    const ItemKeys keys(p, t, it);
    weights.begin_item(it, keys);
    kv.begin_item(it.b, it.rows);
    scorer.begin_item(it.b, it.g0, it.rows);
    epi.begin_item(it.b);
    strip.begin_item(it);
    state.reset(it.rows);

    for (int64_t kb = keys.first_block(t.k_block); kb * t.k_block < keys.jhi; ++kb) {
      // Keys [j0, j0 + nk): the aligned block, cut after what the item can
      // see. (Its start is never moved, so SIMD lanes and summation order
      // of a row do not depend on the other rows of its group.)
      const int64_t j0 = kb * t.k_block;
      const int64_t nk = imin((kb + 1) * t.k_block, keys.jhi) - j0;
      scorer.pack_keys(kv.keys(j0), nk);
      const auto vals = kv.values(j0, nk);
      for (int64_t ti = 0; ti < it.ntiles; ++ti) {
        if (!keys.tile_sees(ti, j0, nk)) continue;
        weights.write_pending();
        const int64_t r0 = ti * t.q_block, r1 = imin(r0 + t.q_block, it.rows);
        for (int64_t s0 = r0; s0 < r1; s0 += kStrip)
          strip.run(s0, imin(kStrip, r1 - s0), kb, j0, nk, keys, vals, weights);
      }
    }

    if (split.base) {  // partial state for merge_splits (driver)
      split.store(it, state);
      continue;
    }
    finish_rows(p, it, state, log2, weights);
    weights.finish_item(it, keys.jhi);
  }
  weights.flush();
}
