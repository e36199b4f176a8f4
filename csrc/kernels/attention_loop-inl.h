// The blocked online-softmax loop shared by every attention op, written once
// over the Vec layer, a Scorer (how the op scores a query block against a
// key block: sdpa-inl.h, additive-inl.h) and a Variant (kernel_switch.h:
// the score epilogue and the sink, score_variants-inl.h). Included INSIDE a
// target namespace after the Vec types, vec_math-inl.h and
// score_variants-inl.h; no include guard.
//
// One work item = (batch element, block of q_block query rows):
//   1. scorer.begin_item packs what the scorer needs of the query block.
//   2. For each key block of k_block keys inside the union of the rows'
//      visible intervals (causal / window / kv_lengths make each row's visible
//      keys ONE interval, so fully hidden key blocks are never touched):
//      Row by row in strips of Shape::strip rows (the strip's scores stay in
//      L1 from the product to the softmax to P V; each strip stops at its
//      own last visible key, so causal tiles waste at most a strip):
//        S = scorer.scores(block) (strip x ncols), then per row the score
//        epilogue's transform (softcap), the mask (bool: -inf where False;
//        float: + bias, add_bias_rule), the epilogue's bias (ALiBi); hide
//        keys outside each row's interval (only boundary blocks pay), then
//        the online softmax
//        m' = max(m, rowmax S), P = exp(S - m') (2^ in log2 units: `log2`),
//        l = l e^(m - m') + sum P,
//        acc = acc e^(m - m') + P V with an MR x NC register tile.
//   3. Finalisation (row_finish.h; the sink's denominator term, once):
//      out = acc / l, lse = m + log l; rows that saw no key: out 0, lse -inf
//      (lse = sink with a sink). With key splits (decoding) each item keeps
//      its partial (m, l, acc) and the driver's merge_splits finishes the
//      rows the same way.
//   With weights: P of each block is stored as it is made, with its m', in
//   scratch (or, for very long rows, in `weights` itself: tiling.cpp); the
//   finalisation writes it to `weights` rescaled by e^(m' - m) / l -- with
//   two scratch buffers a few rows per (tile, key block) while the thread's
//   next item computes (PendingWeights). No score is computed twice.
//
// The Scorer contract (DotScorer in sdpa-inl.h, AdditiveScorer in
// additive-inl.h):
//   kPanelWidth                 score columns come in multiples of it;
//   kLog2Scores                 it can make scores in log2 units (folding
//                               log2 e into its scale) when scores_in_log2(p);
//   begin_item(b, g0, rows)     prepare query rows [g0, g0 + rows) of batch b;
//   pack_keys(j0, nk)           prepare keys [j0, j0 + nk) (once per key block);
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

template <class T>
inline T neg_inf() { return -std::numeric_limits<T>::infinity(); }

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

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

// W elements at p as a vector of V::T, from the storage type S (T, or
// bfloat16 / float16 / int8 codes -- without their scale -- for a float Vec).
template <class V, class S>
inline typename V::R load_as(const S* p) {
  if constexpr (std::is_same_v<S, Bf16>) return V::load_bf16(&p->bits);
  else if constexpr (std::is_same_v<S, F16>) return V::load_f16(&p->bits);
  else if constexpr (std::is_same_v<S, I8>) return V::load_i8(&p->code);
  else return V::load(p);
}

// C[MR x NC*W] += P[MR x nk] * B[nk x NC*W]   (probabilities times values;
// B in the storage type SB: packed V::T rows, or values read in place)
// kStream: B is read from memory (values in place, decoding): the row
// kAhead ahead is fetched a vector at a time as this one is read.
template <class V, int MR, int NC, class SB, bool kStream = false>
inline void pv_tile(const typename V::T* p, int64_t ldp, int64_t nk,
                    const SB* b, int64_t ldb, typename V::T* c,
                    int64_t ldc) {
  using R = typename V::R;
  constexpr int W = V::W;
  constexpr int64_t kAhead = 16;
  R acc[MR][NC];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NC; ++n) acc[m][n] = V::load(c + m * ldc + n * W);
  for (int64_t j = 0; j < nk; ++j) {
    if constexpr (kStream) {  // one fetch per cache line (a vector of int8 codes is 16 bytes)
      constexpr int kVecsPerLine = 64 / (W * int(sizeof(SB))) > 1 ? 64 / (W * int(sizeof(SB))) : 1;
      if (j + kAhead < nk)
        for (int n = 0; n < NC; n += kVecsPerLine) __builtin_prefetch(b + (j + kAhead) * ldb + n * W);
    }
    R bv[NC];
    for (int n = 0; n < NC; ++n) bv[n] = load_as<V>(b + j * ldb + n * W);
    for (int m = 0; m < MR; ++m) {
      const R av = V::set1(p[m * ldp + j]);
      for (int n = 0; n < NC; ++n) acc[m][n] = V::fma(av, bv[n], acc[m][n]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NC; ++n) V::store(c + m * ldc + n * W, acc[m][n]);
}

// Row tails (1..MR rows) and column tails (1..NC vectors) of P V.
template <class V, int MR, int NC, class SB, bool kStream = false>
inline void pv_rows(int mr, const typename V::T* p, int64_t ldp, int64_t nk,
                    const SB* b, int64_t ldb, typename V::T* c, int64_t ldc) {
  if constexpr (MR > 1) {
    if (mr < MR) return pv_rows<V, MR - 1, NC, SB, kStream>(mr, p, ldp, nk, b, ldb, c, ldc);
  }
  pv_tile<V, MR, NC, SB, kStream>(p, ldp, nk, b, ldb, c, ldc);
}

template <class V, int MR, int NC, class SB, bool kStream = false>
inline void pv_cols(int nvec, int mr, const typename V::T* p, int64_t ldp, int64_t nk,
                    const SB* b, int64_t ldb, typename V::T* c, int64_t ldc) {
  if constexpr (NC > 1) {
    if (nvec < NC) return pv_cols<V, MR, NC - 1, SB, kStream>(nvec, mr, p, ldp, nk, b, ldb, c, ldc);
  }
  pv_rows<V, MR, NC, SB, kStream>(mr, p, ldp, nk, b, ldb, c, ldc);
}

// acc[rows x ev_pad] += P[rows x nk] * B[nk x ev_pad] for one strip of
// probabilities (row stride ldp), B in the storage type SB (row stride ldb).
// One row (decoding without grouped heads) gets kRowNC independent
// accumulators: with Shape::pv_nc, P V chained every key on the FMA latency
// (AVX-512: 2 chains, 4 passes over P for Ev = 128). Each element still sums
// over the keys in order: the same bits either way.
template <class V, class Shape, class SB>
inline void pv_strip(int64_t rows, const typename V::T* p, int64_t ldp, int64_t nk, const SB* b,
                     int64_t ldb, typename V::T* acc, int64_t ev_pad) {
  constexpr int W = V::W;
  if (rows == 1) {
    constexpr int kRowNC = W >= 16 ? 8 : W >= 8 ? 6 : Shape::pv_nc;
    for (int64_t c0 = 0; c0 < ev_pad; c0 += kRowNC * W) {
      const int nvec = static_cast<int>(imin(kRowNC, (ev_pad - c0) / W));
      pv_cols<V, 1, kRowNC, SB, true>(nvec, 1, p, ldp, nk, b + c0, ldb, acc + c0, ev_pad);
    }
    return;
  }
  for (int64_t m0 = 0; m0 < rows; m0 += Shape::pv_mr) {
    const int mr = static_cast<int>(imin(Shape::pv_mr, rows - m0));
    for (int64_t c0 = 0; c0 < ev_pad; c0 += Shape::pv_nc * W) {
      const int nvec = static_cast<int>(imin(Shape::pv_nc, (ev_pad - c0) / W));
      pv_cols<V, Shape::pv_mr, Shape::pv_nc>(nvec, mr, p + m0 * ldp, ldp, nk, b + c0, ldb,
                                             acc + m0 * ev_pad + c0, ev_pad);
    }
  }
}

// True if columns [0, n) of rows [0, rows) of a (row stride lda) are all
// finite (x - x: 0 for finite x, NaN for inf / NaN).
template <class V>
inline bool rows_finite(const typename V::T* a, int64_t lda, int64_t rows, int64_t n) {
  using T = typename V::T;
  typename V::R vs = V::zero();
  T ss = T(0);
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = a + r * lda;
    int64_t c = 0;
    for (; c + V::W <= n; c += V::W) {
      const typename V::R x = V::load(row + c);
      vs = V::add(vs, V::sub(x, x));
    }
    for (; c < n; ++c) ss += row[c] - row[c];
  }
  return V::reduce_sum(vs) + ss == T(0);
}

// dst[0, n) = src[0, n) converted from the storage type S to V::T
// (bfloat16 / float16 through the Vec's vector loads; same type: a copy).
template <class V, class S>
inline void convert_row(const S* src, typename V::T* dst, int64_t n) {
  using T = typename V::T;
  int64_t c = 0;
  for (; c + V::W <= n; c += V::W) V::store(dst + c, load_as<V>(src + c));
  for (; c < n; ++c) dst[c] = static_cast<T>(to_float(src[c]));
}

inline void prefetch_bytes(const char* p, int64_t bytes) {
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off);
}

// Rows [0, nrows) of src (row stride ld_src) converted to V::T into rows of
// dst (row stride ld_dst), columns [n, ld_dst) zeroed. This is the first read
// of V when it is not used in place (unaligned rows, or bfloat16 / float16
// for many rows), streamed from memory: rows kAhead ahead are fetched
// meanwhile (left to the hardware prefetcher, such a stream ran at ~60% of the
// rate of one read in place).
template <class V, class S>
inline void convert_rows(const S* src, int64_t ld_src, int64_t nrows, int64_t n,
                         typename V::T* dst, int64_t ld_dst) {
  using T = typename V::T;
  constexpr int64_t kAhead = 16;
  for (int64_t j = 0; j < nrows; ++j) {
    if (j + kAhead < nrows)
      prefetch_bytes(reinterpret_cast<const char*>(src + (j + kAhead) * ld_src), n * int64_t(sizeof(S)));
    T* d = dst + j * ld_dst;
    convert_row<V>(src + j * ld_src, d, n);
    for (int64_t c = n; c < ld_dst; ++c) d[c] = T(0);
  }
}

// True if rows [0, nk) x columns [0, Ev) of b are all finite: x - x is 0
// for finite x and NaN for inf/NaN, so the sum stays 0 only if all are.
template <class V, class SB>
inline bool all_finite(const SB* b, int64_t ldb, int64_t nk, int64_t Ev) {
  using T = typename V::T;
  typename V::R vs = V::zero();
  T ss = T(0);
  constexpr int64_t kAhead = 8;  // rows fetched ahead (first read of V in decoding)
  for (int64_t j = 0; j < nk; ++j) {
    const SB* row = b + j * ldb;
    if (j + kAhead < nk) prefetch_bytes(reinterpret_cast<const char*>(row + kAhead * ldb), Ev * int64_t(sizeof(SB)));
    int64_t c = 0;
    for (; c + V::W <= Ev; c += V::W) {
      const typename V::R x = load_as<V>(row + c);
      vs = V::add(vs, V::sub(x, x));
    }
    for (; c < Ev; ++c) {
      const T x = static_cast<T>(to_float(row[c]));
      ss += x - x;
    }
  }
  return V::reduce_sum(vs) + ss == T(0);
}

// acc[r] += sum_j P[r, j] V[j] over the j with P[r, j] != 0 only, so that a
// NaN or inf value never reaches a row for which its key is hidden (0 * inf
// would). Used only for value blocks that hold a non-finite number.
template <class T>
inline void pv_skip_zeros(const T* p, int64_t ldp, int64_t rows, int64_t nk, const T* b,
                          int64_t ldb, int64_t Ev, T* acc, int64_t ldacc) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < nk; ++j) {
      const T pj = p[r * ldp + j];
      if (pj == T(0)) continue;
      for (int64_t c = 0; c < Ev; ++c) acc[r * ldacc + c] += pj * b[j * ldb + c];
    }
}

// int8 values (a quantised KV cache): P V reads the codes (in place or
// converted into scratch) and the value scales are folded into P, row j's
// probability times vscale[j], after the softmax sums and the weights have
// taken P. `finite`: whether every scale is; if not (a position stored from
// inf/NaN), a probability of 0 stays 0 (0 * NaN would reach rows that cannot
// see that position).
template <class V>
inline void fold_value_scales(typename V::T* st, int64_t ld_s, int64_t rows, int64_t nk,
                              const float* vscale, bool finite) {
  using T = typename V::T;
  for (int64_t r = 0; r < rows; ++r) {
    T* s = st + r * ld_s;
    int64_t c = 0;
    if (finite)
      for (; c + V::W <= nk; c += V::W) V::store(s + c, V::mul(V::load(s + c), V::load(vscale + c)));
    for (; c < nk; ++c) s[c] = s[c] == T(0) ? T(0) : s[c] * vscale[c];
  }
}

// Whether vscale[0, n) are all finite.
inline bool scales_finite(const float* vscale, int64_t n) {
  float z = 0.0f;
  for (int64_t j = 0; j < n; ++j) z += vscale[j] - vscale[j];
  return z == 0.0f;
}

// The float mask's element rule, written once (apply_mask_row, and
// qk_tile as it stores a register tile): s + bias, but a -inf bias hides the
// key (like False in a bool mask): the score becomes -inf even if it was
// NaN, so a NaN key it hides stays out.
template <class V>
inline typename V::R add_bias_rule(typename V::R s, typename V::R bias) {
  using T = typename V::T;
  return V::select_less(bias, V::set1(std::numeric_limits<T>::lowest()), V::set1(neg_inf<T>()),
                        V::add(s, bias));
}

template <class T>
inline T add_bias_rule(T s, T bias) {
  return bias < std::numeric_limits<T>::lowest() ? neg_inf<T>() : s + bias;
}

// Adds the explicit mask of one row to its scores s[0, nk). `ahead`: the
// same columns of a later row, prefetched as this one is read (one line per
// vector, spread through the loop: prefetching a whole row at once stalls on
// the fill buffers).
template <class V>
inline void apply_mask_row(MaskKind kind, const char* mrow, int64_t col_stride, int64_t nk,
                           typename V::T* s, const char* ahead) {
  using T = typename V::T;
  if (kind == MaskKind::boolean) {
    const uint8_t* m = reinterpret_cast<const uint8_t*>(mrow);
    int64_t c = 0;
    if (col_stride == 1) {
      for (; c + V::W <= nk; c += V::W) {
        __builtin_prefetch(ahead + c);
        V::store(s + c, V::hide_where_zero(m + c, V::load(s + c)));
      }
    }
    for (; c < nk; ++c)
      if (!m[c * col_stride]) s[c] = neg_inf<T>();
  } else {
    const T* m = reinterpret_cast<const T*>(mrow);
    int64_t c = 0;
    if (col_stride == 1) {
      for (; c + V::W <= nk; c += V::W) {
        __builtin_prefetch(ahead + c * int64_t(sizeof(T)));
        V::store(s + c, add_bias_rule<V>(V::load(s + c), V::load(m + c)));
      }
    }
    for (; c < nk; ++c) s[c] = add_bias_rule(s[c], m[c * col_stride]);
  }
}

// One online-softmax step for one row: turns scores s[0, ncols) (ncols a
// multiple of W, hidden entries -inf) into probabilities in place and returns
// the max they are relative to. Updates m, l and rescales the acc row.
template <class V, bool kLog2>
inline typename V::T softmax_step(typename V::T* s, int64_t ncols, typename V::T* m,
                                  typename V::T* l, typename V::T* acc_row, int64_t ev_pad) {
  using T = typename V::T;
  using R = typename V::R;
  // Four running maxima: one would chain every vector on the latency of
  // max (3% of the whole call at L = 1024, E = 64).
  R mx0 = V::set1(neg_inf<T>()), mx1 = mx0, mx2 = mx0, mx3 = mx0;
  int64_t c = 0;
  for (; c + 4 * V::W <= ncols; c += 4 * V::W) {
    mx0 = V::max(mx0, V::load(s + c));
    mx1 = V::max(mx1, V::load(s + c + V::W));
    mx2 = V::max(mx2, V::load(s + c + 2 * V::W));
    mx3 = V::max(mx3, V::load(s + c + 3 * V::W));
  }
  for (; c < ncols; c += V::W) mx0 = V::max(mx0, V::load(s + c));
  const T block_max = V::reduce_max(V::max(V::max(mx0, mx1), V::max(mx2, mx3)));
  const T m_old = *m;
  const T m_new = block_max > m_old ? block_max : m_old;
  // Subtract 0 instead of -inf while nothing is visible: exp(-inf) = 0.
  const T m_use = m_new == neg_inf<T>() ? T(0) : m_new;
  const R vm = V::set1(m_use);
  const R vlog2e = V::set1(static_cast<T>(kLog2e));
  R vsum = V::zero();
  for (c = 0; c < ncols; c += V::W) {
    const R x = V::sub(V::load(s + c), vm);
    // x <= 0 (s <= m_use) unless the row holds a NaN score, whose output
    // is NaN whatever 2^x gives: vexp2 may skip its upper clamp. Natural
    // units take e^x as 2^(x log2 e) too (5 operations cheaper than vexp).
    const R e = vexp2<V, true>(kLog2 ? x : V::mul(x, vlog2e));
    V::store(s + c, e);
    vsum = V::add(vsum, e);
  }
  // (No libm call when the max is unchanged, the common case.)
  const T alpha = m_old == m_use ? T(1) : kLog2 ? std::exp2(m_old - m_use) : std::exp(m_old - m_use);
  if (alpha != T(1)) {
    const R va = V::set1(alpha);
    for (int64_t c = 0; c < ev_pad; c += V::W)
      V::store(acc_row + c, V::mul(V::load(acc_row + c), va));
  }
  *l = *l * alpha + V::reduce_sum(vsum);
  *m = m_new;
  return m_use;
}

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

// Runs the work items it takes from `work` of an attention op whose scores come
// from `Scorer` (the contract at the top of this file). SV is the element
// type values are stored in (T, or bfloat16/float16 for T = float); Var the
// score variants compiled in (kernel_switch.h). An item is a row group of
// one batch element; key blocks are aligned to k_block, packed once per
// group, and scored tile by tile (q_block rows) against each.
template <class V, class Shape, class Scorer, class SV = typename V::T, class Var = PlainVariant>
void attention_loop(const AttentionParams& p, Scorer& scorer, const Tiling& t, WorkItems& work,
                    typename V::T* scratch) {
  using T = typename V::T;
  constexpr int W = V::W;
  constexpr int PW = Scorer::kPanelWidth;  // score columns come in multiples of this
  // Scores in log2 units: a Scorer with kLog2Scores folds log2 e into its
  // scores when scores_in_log2(p) (the dot-product scorer: into the query
  // scale), so the softmax takes 2^x (vexp2; natural units take 2^(x log2 e),
  // one multiplication more per vector) and m is turned back (m ln 2) for
  // the lse. Not with a float mask, whose biases (up to the largest float:
  // finfo.min masks) would overflow once multiplied by log2 e; additive
  // scores stay natural too.
  const bool log2 = Scorer::kLog2Scores && scores_in_log2(p);
  static_assert(kPadElems % PW == 0, "panel width must divide kPadElems");
  constexpr int kMaxTiles = kMaxTilesPerGroup;  // q_block tiles per row group (core_limits.h)
  constexpr int64_t kStrip = Shape::strip;  // rows scored, softmaxed and multiplied by V together

  T* vp = scratch + t.off_v;
  T* st = scratch + t.off_s;
  T* acc = scratch + t.off_acc;
  T* mrow = scratch + t.off_m;
  T* lrow = scratch + t.off_l;
  // With weights: each block's row max (then the row's scale factors), and
  // the probabilities until the group ends; two buffers of each when the
  // previous item's weights are written during the next (`pending`).
  int buf = 0;
  T* wmax = nullptr;
  T* wp = nullptr;
  PendingWeights<T> pending;

  const int64_t L = p.L, S = p.S, Ev = p.Ev;
  const int64_t rows_total = p.fold * L;  // folded query rows per batch element
  const int64_t ev_pad = t.ev_pad;
  const int64_t ld_s = round_up(t.k_block, kPadElems);
  const bool want_w = p.weights.data != nullptr;
  const int64_t mask_esz = p.mask_kind == MaskKind::boolean ? 1 : int64_t(sizeof(T));
  // A float mask with contiguous rows is added by a scorer that can (as it
  // stores each score tile: sdpa-inl.h) instead of in a pass of its own
  // (AVX-512, L = 2048, 1 thread: mask / no-mask time 1.16 -> 1.12).
  // Not with softcap, which comes before the mask's bias.
  const bool fuse_bias = p.mask_kind == MaskKind::additive && p.mask.col_stride == 1 && !Var::kSoftcap;
  ScoreEpilogue<V, Var> epi(p, log2);
  const StridedArray& sinks = p.variants.sinks;
  // Values whose rows are whole vectors are read in place, else packed. Rows
  // that are not vector-aligned (NumPy aligns to 16 bytes) are packed too
  // when many strips read them: split loads cost P V more than packing the
  // block once does (AVX-512, L = 1024, E = 64: 5-6% of the call); with a
  // few rows (decoding) the copy costs more than it saves (GQA decoding
  // 20% slower packed). bfloat16 / float16 values are widened as P V reads
  // them when few rows do (decoding: converting into scratch first halved
  // the rate K and V stream at); many rows share one converted copy.
  constexpr int64_t kVecBytes = W * int64_t(sizeof(T));
  const bool v_cols_whole = Ev % W == 0 && ev_pad == Ev;
  const bool v_stride_whole = p.v.row_stride * int64_t(sizeof(T)) % kVecBytes == 0;

  WorkItems items = work;  // a local copy: its counter stays in a register
  for (int64_t item = items.next(); item >= 0; item = items.next()) {
    // item = (batch element, row group, key split), split fastest.
    const int64_t b = item / (t.num_groups * t.num_splits);
    const int64_t g0 = (item / t.num_splits % t.num_groups) * t.group_rows;
    const int64_t split = item % t.num_splits;
    // Keys this item may look at: all, or one split_keys chunk of them.
    const int64_t ks = t.num_splits > 1 ? split * t.split_keys : 0;
    const int64_t ke = t.num_splits > 1 ? imin(S, ks + t.split_keys) : S;
    const int64_t grows = imin(t.group_rows, rows_total - g0);
    const int64_t ntiles = ceil_div(grows, t.q_block);

    const SV* v = static_cast<const SV*>(p.v.data) + p.v.batch_offset(p.batch, b);
    const float* vscale = std::is_same_v<SV, I8>  // int8 values: their scales
        ? static_cast<const float*>(p.v_scale.data) + p.v_scale.batch_offset(p.batch, b) : nullptr;
    const bool few_rows = grows < 4 * kStrip;
    const bool v_in_place = std::is_same_v<SV, T>
        ? v_cols_whole && v_stride_whole && (reinterpret_cast<uintptr_t>(v) % kVecBytes == 0 || few_rows)
        : v_cols_whole && few_rows;
    T* out = static_cast<T*>(p.out.data) + p.out.batch_offset(p.batch, b);
    T* wrows = want_w ? static_cast<T*>(p.weights.data) + p.weights.batch_offset(p.batch, b) : nullptr;
    const int64_t n = p.vis.lengths.data
        ? static_cast<const int64_t*>(p.vis.lengths.data)[p.vis.lengths.batch_offset(p.batch, b)]
        : S;
    const char* mask = p.mask_kind == MaskKind::none ? nullptr
        : static_cast<const char*>(p.mask.data) + p.mask.batch_offset(p.batch, b) * mask_esz;

    // Values read in place by a group of one strip (decoding) are checked
    // for inf/NaN by P V's results, not by a pass of their own: the check
    // pass streamed V from memory, and P V read it again (decoding at 80% of
    // the read bandwidth instead of 90%). acc stays finite only if every
    // value P V read was finite (p * inf is inf or NaN, 0 * inf NaN, and
    // neither goes away), so a finite acc means all_finite would have said
    // so too; otherwise acc is restored from a copy kept in vp (unused when V
    // is read in place) and the block takes the path it always took.
    const bool check_by_acc = !std::is_same_v<SV, I8> && ntiles == 1 && grows <= kStrip &&
                              grows <= t.k_block;

    // Union of the visible intervals of each tile's rows, and of the group.
    int64_t tlo[kMaxTiles], thi[kMaxTiles];
    int64_t jlo = S, jhi = 0;
    for (int64_t ti = 0; ti < ntiles; ++ti) {
      tlo[ti] = S;
      thi[ti] = 0;
      const int64_t r1 = imin((ti + 1) * t.q_block, grows);
      for (int64_t r = ti * t.q_block; r < r1; ++r) {
        const KeyInterval iv = visible_keys(p.vis, (g0 + r) % L, L, n);
        const int64_t lo = imax(iv.lo, ks), hi = imin(iv.hi, ke);
        if (hi > lo) {
          tlo[ti] = imin(tlo[ti], lo);
          thi[ti] = imax(thi[ti], hi);
        }
      }
      jlo = imin(jlo, tlo[ti]);
      jhi = imax(jhi, thi[ti]);
    }

    // The previous item's weights (if still pending): so many rows per
    // (tile, key block) of this item that they are all written by its end.
    int64_t pace = 0;
    if (want_w) {
      wmax = scratch + t.off_wmax + buf * t.group_rows * t.num_k_blocks;
      wp = t.ld_wp > 0 ? scratch + t.off_wp + buf * t.group_rows * t.ld_wp : nullptr;
      int64_t tile_blocks = 0;
      for (int64_t ti = 0; ti < ntiles; ++ti)
        if (thi[ti] > tlo[ti]) tile_blocks += (thi[ti] - 1) / t.k_block - tlo[ti] / t.k_block + 1;
      pace = ceil_div(pending.rows - pending.next, imax(tile_blocks, 1));
    }

    if (want_w && t.wp_buffers == 2 && S > 0) {
      // Fault in this item's rows of the weights array now, while little of
      // use is in the caches: the kernel zeroes each new page through the
      // caches, which mid-item evicted the data the item works on (L = 2048:
      // 8% slower). Writing zeros is safe: every column of these rows is
      // written again when they are finalised.
      for (int64_t r = 0; r < grows; ++r) {
        T* w = wrows + p.weights.row_offset(g0 + r, L);
        for (int64_t c = 0; c < S; c += 4096 / int64_t(sizeof(T))) w[c] = T(0);
        w[S - 1] = T(0);
      }
    }
    scorer.begin_item(b, g0, grows);
    epi.begin_item(b);
    for (int64_t r = 0; r < grows; ++r) {
      mrow[r] = neg_inf<T>();
      lrow[r] = T(0);
      for (int64_t c = 0; c < ev_pad; ++c) acc[r * ev_pad + c] = T(0);
      if (want_w)
        for (int64_t kb = 0; kb < t.num_k_blocks; ++kb) wmax[r * t.num_k_blocks + kb] = neg_inf<T>();
    }

    for (int64_t kb = jlo < jhi ? jlo / t.k_block : 0; kb * t.k_block < jhi; ++kb) {
      // Keys [j0, j0 + nk): the aligned block, cut after what the group can
      // see. (Its start is never moved, so SIMD lanes and summation order
      // of a row do not depend on the other rows of its group.)
      const int64_t j0 = kb * t.k_block;
      const int64_t nk = imin((kb + 1) * t.k_block, jhi) - j0;
      scorer.pack_keys(j0, nk);
      // Values of the block: read in place (vin) or converted into vp.
      const SV* vin = v_in_place ? v + j0 * p.v.row_stride : nullptr;
      bool v_finite;
      bool vscale_finite = true;
      if constexpr (std::is_same_v<SV, I8>) {  // int8 codes are finite; their scales may not be
        v_finite = true;
        vscale_finite = scales_finite(vscale + j0, nk);
        if (!vin) convert_rows<V>(v + j0 * p.v.row_stride, p.v.row_stride, nk, Ev, vp, ev_pad);
      } else if (vin && check_by_acc) {
        v_finite = true;  // until P V's results say otherwise (see check_by_acc)
      } else if (vin) {
        v_finite = all_finite<V>(vin, p.v.row_stride, nk, Ev);
        if (!v_finite) {  // rare: pv_skip_zeros reads a converted copy
          convert_rows<V>(vin, p.v.row_stride, nk, Ev, vp, ev_pad);
          vin = nullptr;
        }
      } else {
        convert_rows<V>(v + j0 * p.v.row_stride, p.v.row_stride, nk, Ev, vp, ev_pad);
        v_finite = all_finite<V>(vp, ev_pad, nk, Ev);
      }
      for (int64_t ti = 0; ti < ntiles; ++ti) {
        if (thi[ti] <= j0 || tlo[ti] >= j0 + nk) continue;  // tile sees nothing here
        if (pending.next < pending.rows) write_weight_rows<V>(p, t, pending, pace);
        const int64_t r0 = ti * t.q_block;
        const int64_t rows = imin(t.q_block, grows - r0);
        // Strips of kStrip rows: the strip's scores stay in L1 from Q K^T
        // through the softmax to P V. Each strip stops at its own last
        // visible key (causal: its diagonal).
        for (int64_t s0 = r0; s0 < r0 + rows; s0 += kStrip) {
          const int64_t srows = imin(kStrip, r0 + rows - s0);
          int64_t rlo[kStrip], rhi[kStrip];
          int64_t tk = 0;
          for (int64_t r = 0; r < srows; ++r) {
            const KeyInterval iv = visible_keys(p.vis, (g0 + s0 + r) % L, L, n);
            rlo[r] = imax(iv.lo - j0, 0);  // [j0, j0+nk) lies in [ks, ke)
            rhi[r] = imin(iv.hi - j0, nk);
            if (rhi[r] > rlo[r]) tk = imax(tk, rhi[r]);
          }
          if (tk == 0) continue;  // the strip sees nothing in this block
          const int64_t tcols = round_up(tk, PW);
          bool biased = false;  // the scorer added the float mask
          if constexpr (Scorer::kAddsBias && !Var::kSoftcap) {
            if (fuse_bias) {
              const T* brows[kStrip];
              for (int64_t r = 0; r < srows; ++r)
                brows[r] = reinterpret_cast<const T*>(mask) + p.mask.row_offset(g0 + s0 + r, L) + j0;
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
            if constexpr (Var::kSoftcap) epi.transform(s, ecols);
            if (mask && !biased) {
              // Mask rows are far apart (a row of S entries each): the row
              // kMaskAhead ahead (across strips) is fetched while this one
              // is applied, so it is in cache in time.
              constexpr int64_t kMaskAhead = 2;
              const int64_t ra = gr + kMaskAhead < grows ? gr + kMaskAhead : gr;
              apply_mask_row<V>(p.mask_kind,
                                mask + (p.mask.row_offset(g0 + gr, L) + j0 * p.mask.col_stride) * mask_esz,
                                p.mask.col_stride, tk, s,
                                mask + (p.mask.row_offset(g0 + ra, L) + j0 * p.mask.col_stride) * mask_esz);
            }
            if constexpr (Var::kAlibi)
              epi.add_bias(s, ecols, g0 + gr, query_position(p.vis, (g0 + gr) % L, L, n), j0);
            for (int64_t c = 0; c < lo; ++c) s[c] = neg_inf<T>();
            for (int64_t c = hi; c < tcols; ++c) s[c] = neg_inf<T>();
            const T m_use = log2 ? softmax_step<V, true>(s, tcols, mrow + gr, lrow + gr, acc + gr * ev_pad, ev_pad)
                                 : softmax_step<V, false>(s, tcols, mrow + gr, lrow + gr, acc + gr * ev_pad, ev_pad);
            if (want_w) {
              T* w = (wp ? wp + gr * t.ld_wp : wrows + p.weights.row_offset(g0 + gr, L)) + j0;
              for (int64_t c = 0; c < tk; ++c) w[c] = s[c];
              for (int64_t c = tk; c < nk; ++c) w[c] = T(0);
              wmax[gr * t.num_k_blocks + kb] = m_use;
            }
          }
          if constexpr (std::is_same_v<SV, I8>)
            fold_value_scales<V>(st, ld_s, srows, tk, vscale + j0, vscale_finite);
          if (!v_finite) {  // rare: keep a hidden NaN/inf value out of rows that cannot see it
            pv_skip_zeros<T>(st, ld_s, srows, tk, vp, ev_pad, Ev, acc + s0 * ev_pad, ev_pad);
            continue;
          }
          if (vin && check_by_acc) {
            T* a = acc + s0 * ev_pad;
            for (int64_t i = 0; i < srows * ev_pad; ++i) vp[i] = a[i];  // (restored below if needed)
            pv_strip<V, Shape>(srows, st, ld_s, tk, vin, p.v.row_stride, a, ev_pad);
            if (rows_finite<V>(a, ev_pad, srows, Ev) &&
                (tk == nk || all_finite<V>(vin + tk * p.v.row_stride, p.v.row_stride, nk - tk, Ev)))
              continue;
            for (int64_t i = 0; i < srows * ev_pad; ++i) a[i] = vp[i];
            if (all_finite<V>(vin, p.v.row_stride, nk, Ev)) {  // (acc overflowed, V is finite)
              pv_strip<V, Shape>(srows, st, ld_s, tk, vin, p.v.row_stride, a, ev_pad);
            } else {
              convert_rows<V>(vin, p.v.row_stride, nk, Ev, vp, ev_pad);
              pv_skip_zeros<T>(st, ld_s, srows, tk, vp, ev_pad, Ev, a, ev_pad);
            }
            continue;
          }
          if (vin)
            pv_strip<V, Shape>(srows, st, ld_s, tk, vin, p.v.row_stride, acc + s0 * ev_pad, ev_pad);
          else
            pv_strip<V, Shape>(srows, st, ld_s, tk, static_cast<const T*>(vp), ev_pad, acc + s0 * ev_pad,
                               ev_pad);
        }
      }
    }

    if (t.num_splits > 1) {  // partial state for merge_splits (driver): m, l, acc
      T* part = static_cast<T*>(t.split_state) + item * t.group_rows * (Ev + 2);
      for (int64_t gr = 0; gr < grows; ++gr) {
        T* row = part + gr * (Ev + 2);
        row[0] = mrow[gr];
        row[1] = lrow[gr];
        for (int64_t c = 0; c < Ev; ++c) row[2 + c] = acc[gr * ev_pad + c];
      }
      continue;
    }

    // Finish each row (row_finish.h: the sink joins its denominator here);
    // write out, lse and weights.
    const T* sink_b = sinks.data ? static_cast<const T*>(sinks.data) + sinks.batch_offset(p.batch, b) : nullptr;
    for (int64_t gr = 0; gr < grows; ++gr) {
      const int64_t i = g0 + gr;
      const T sink = sink_b ? sink_b[(i / L) * sinks.fold_stride] : neg_inf<T>();
      const RowFinish<T> fin = finish_row(mrow[gr], lrow[gr], sink, log2);
      const T inv = fin.inv;
      const T oscale = fin.carry * inv;  // (= inv without a sink)
      T* o = out + p.out.row_offset(i, L);
      const T* a = acc + gr * ev_pad;
      for (int64_t c = 0; c < Ev; ++c) o[c] = a[c] * oscale;
      if (p.lse.data) {
        T* lse = static_cast<T*>(p.lse.data) + p.lse.batch_offset(p.batch, b);
        lse[p.lse.row_offset(i, L)] = fin.lse;
      }
      if (want_w) {
        // Blocks this row's tile processed hold exp(s - m_block) (2^ of the
        // difference in log2 units); they are rescaled to exp(s - top) / den,
        // everything else is an exact 0 (write_weight_rows).
        const T m_fin = fin.top == neg_inf<T>() ? T(0) : fin.top;
        T* f = wmax + gr * t.num_k_blocks;
        for (int64_t kb = 0; kb < t.num_k_blocks; ++kb) {
          const T wm = f[kb];
          f[kb] = fin.empty || wm == neg_inf<T>() ? neg_inf<T>()
                                                  : (log2 ? std::exp2(wm - m_fin) : std::exp(wm - m_fin)) * inv;
        }
      }
    }
    if (want_w) {
      write_weight_rows<V>(p, t, pending, pending.rows);  // what is left of the previous item's
      pending = PendingWeights<T>{wrows, wp, t.ld_wp, wmax, g0, grows, 0, jhi};
      if (t.wp_buffers == 2)
        buf ^= 1;  // written during the next item
      else
        write_weight_rows<V>(p, t, pending, grows);  // its buffer is needed for the next item
    }
  }
  write_weight_rows<V>(p, t, pending, pending.rows);
}
