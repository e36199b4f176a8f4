// Additive (Bahdanau) scores for the shared attention loop
// (attention_loop-inl.h), written once over the Vec layer and instantiated
// per ISA. Included INSIDE a target namespace after attention_loop-inl.h;
// no include guard.
//
//   s[i, j] = sum_a v_a[a] * tanh(qp[i, a] + kp[j, a])
//
// AdditiveScorer has DotScorer's interface (sdpa-inl.h). Keys are packed like
// pack_key_panels: panels of PW = NR*W consecutive keys, A rows of PW values,
// so an MR x PW register tile of scores accumulates over a = 0..A-1 from
// broadcast query scalars and contiguous panel loads: no horizontal sums, and
// the (L, S, A) tensor never exists (memory O((rows + keys) A) per thread).
//
// Two ways to score a tile, chosen per (MR rows x key block) from the data:
//
// * Factorised (every |qp| and |kp| of the tile <= kFactorLimit, the usual
//   case): with x = qp + kp,  tanh x = (z - 1) / (z + 1),  z = e^{2qp} e^{2kp}.
//   e^{2qp} (and v_a e^{2qp}) are computed once per query row, e^{2kp} once
//   per packed key block (vexp), so each of the L*S*A terms costs
//     num = (v_a e^{2qp}) e^{2kp} - v_a,  den = e^{2qp} e^{2kp} + 1,
//     acc += num * recip(den)
//   i.e. 3 FMAs and a reciprocal (rcp + one Newton step in float) instead of
//   a tanh. kFactorLimit (20 float, 170 double) keeps every factor and
//   product normal. Error: e^{2qp}, e^{2kp} are within 2 ulp (vexp), so z is
//   within ~5 ulp and tanh within ~2.5 ulp(1) ABSOLUTE (measured: 1.9e-7
//   float, 3.6e-16 double) -- the same order as rounding qp + kp itself; the
//   relative error of tiny tanh values is larger, which the scores (sums of
//   A terms of size ~|v_a|) do not see.
// * Direct (otherwise: huge, infinite projections): acc += v_a vtanh(qp + kp)
//   with vtanh from vec_math-inl.h.
// NaN in qp/kp propagates through either path to the scores it touches.
// Which path a tile takes depends only on the data and the tiling, never on
// the thread running it, so results stay bitwise identical for every
// num_threads. Each score sums its A terms in order a = 0..A-1.
//
// Speed (one core, AVX2, float, A = 128): ~0.3 ns per term, i.e. ~3e9 terms
// per second against ~2e8 for NumPy's tanh of the broadcast sum; see
// benchmarks/bench_additive.py.

// Factorised tile: C[MR x NR*W] = sum_a v_a[a] tanh(qp + kp) from
// eq = rows of [e^{2qp} (A) | v_a e^{2qp} (A)] (row stride lde) and the
// panel ek = e^{2kp} (A rows of NR*W).
template <class V, int MR, int NR>
inline void additive_tile_factored(const typename V::T* eq, int64_t lde, const typename V::T* ek,
                                   const typename V::T* va, int64_t A, typename V::T* c,
                                   int64_t ldc) {
  using R = typename V::R;
  using T = typename V::T;
  constexpr int W = V::W;
  R acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = V::zero();
  const R one = V::set1(T(1));
  for (int64_t a = 0; a < A; ++a) {
    R b[NR];
    for (int n = 0; n < NR; ++n) b[n] = V::load(ek + a * (NR * W) + n * W);
    const R neg_va = V::set1(-va[a]);
    for (int m = 0; m < MR; ++m) {
      const R x = V::set1(eq[m * lde + a]);
      const R xv = V::set1(eq[m * lde + A + a]);
      for (int n = 0; n < NR; ++n) {
        const R num = V::fma(xv, b[n], neg_va);  // v_a (z - 1)
        const R den = V::fma(x, b[n], one);      // z + 1
        acc[m][n] = V::fma(num, V::recip(den), acc[m][n]);
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) V::store(c + m * ldc + n * W, acc[m][n]);
}

// Direct tile: C[MR x NR*W] = sum_a v_a[a] vtanh(qp[m][a] + kp panel[a]),
// qp[m] the MR query rows.
template <class V, int MR, int NR>
inline void additive_tile_direct(const typename V::T* const* qp, const typename V::T* kraw,
                                 const typename V::T* va, int64_t A, typename V::T* c,
                                 int64_t ldc) {
  using R = typename V::R;
  constexpr int W = V::W;
  R acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = V::zero();
  for (int64_t a = 0; a < A; ++a) {
    R b[NR];
    for (int n = 0; n < NR; ++n) b[n] = V::load(kraw + a * (NR * W) + n * W);
    const R w = V::set1(va[a]);
    for (int m = 0; m < MR; ++m) {
      const R x = V::set1(qp[m][a]);
      for (int n = 0; n < NR; ++n) acc[m][n] = V::fma(w, vtanh<V>(V::add(x, b[n])), acc[m][n]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) V::store(c + m * ldc + n * W, acc[m][n]);
}

// Row tails (1..MR rows) of both tiles.
template <class V, int MR, int NR>
inline void additive_rows(int mr, bool factored, const typename V::T* eq, int64_t lde,
                          const typename V::T* ek, const typename V::T* const* qp,
                          const typename V::T* kraw, const typename V::T* va, int64_t A,
                          typename V::T* c, int64_t ldc) {
  if constexpr (MR > 1) {
    if (mr < MR)
      return additive_rows<V, MR - 1, NR>(mr, factored, eq, lde, ek, qp, kraw, va, A, c, ldc);
  }
  if (factored)
    additive_tile_factored<V, MR, NR>(eq, lde, ek, va, A, c, ldc);
  else
    additive_tile_direct<V, MR, NR>(qp, kraw, va, A, c, ldc);
}

// y[0, n) = exp(2 x[0, n)) with vexp; n need not be a multiple of W.
template <class V>
inline void exp_twice(const typename V::T* x, int64_t n, typename V::T* y) {
  using T = typename V::T;
  constexpr int W = V::W;
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const auto v = V::load(x + i);
    V::store(y + i, vexp<V>(V::add(v, v)));
  }
  if (i < n) {  // the tail through a padded vector, so every element sees vexp
    T buf[W];
    for (int c = 0; c < W; ++c) buf[c] = i + c < n ? x[i + c] : T(0);
    const auto v = V::load(buf);
    V::store(buf, vexp<V>(V::add(v, v)));
    for (int c = 0; i + c < n; ++c) y[i + c] = buf[c];
  }
}

template <class V, class Shape>
struct AdditiveScorer {
  using T = typename V::T;
  static constexpr int kPanelWidth = Shape::qk_nr * V::W;
  // Largest |qp|, |kp| of the factorised path: e^{4 limit} and e^{-4 limit}
  // stay normal in T (float: e^{+-80}; double: e^{+-680}).
  static constexpr T kFactorLimit = sizeof(T) == 4 ? T(20) : T(170);

  const AdditiveParams& p;
  const int64_t A;
  // Scratch (the driver sizes the tiling with E := 2A):
  T* eq;            // group rows x 2A: [e^{2qp} | v_a e^{2qp}] per row
  T* ek;            // key block: panels of e^{2kp}          (kpad x A)
  T* kraw;          // key block: panels of kp itself        (kpad x A)
  const T* va;
  const T* q = nullptr;   // qp of the current batch element
  const T* k = nullptr;   // kp of the current batch element
  int64_t g0 = 0;         // first (folded) query row of the group
  bool keys_fit = false;  // every |kp| of the packed block <= kFactorLimit

  AdditiveScorer(const AdditiveParams& params, const Tiling& t, T* scratch)
      : p(params),
        A(params.A),
        eq(scratch + t.off_q),
        ek(scratch + t.off_k),
        kraw(scratch + t.off_k + round_up(t.k_block, kPadElems) * params.A),
        va(static_cast<const T*>(params.v_a)) {}

  const T* qrow(int64_t r) const { return q + p.qp.row_offset(g0 + r, p.L); }

  void begin_item(int64_t b, int64_t first_row, int64_t rows) {
    q = static_cast<const T*>(p.qp.data) + p.qp.batch_offset(p.batch, b);
    k = static_cast<const T*>(p.kp.data) + p.kp.batch_offset(p.batch, b);
    g0 = first_row;
    for (int64_t r = 0; r < rows; ++r) {
      T* e = eq + r * 2 * A;
      exp_twice<V>(qrow(r), A, e);
      for (int64_t a = 0; a < A; ++a) e[A + a] = va[a] * e[a];
    }
  }

  void pack_keys(int64_t j0, int64_t nk) {
    pack_key_panels<T, kPanelWidth>(k, p.kp.row_stride, j0, nk, A, kraw);
    keys_fit = true;
    const int64_t n = round_up(nk, kPanelWidth) * A;
    for (int64_t i = 0; i < n; ++i)  // NaN compares false: it stays, and propagates either way
      if (std::fabs(kraw[i]) > kFactorLimit) keys_fit = false;
    if (keys_fit) exp_twice<V>(kraw, n, ek);
  }

  // Scores of group rows [r0, r0 + rows) against the packed keys into st
  // (row stride ld_s), round_up(nk, kPanelWidth) columns.
  void scores(int64_t r0, int64_t rows, int64_t nk, T* st, int64_t ld_s) const {
    const int64_t ncols = round_up(nk, kPanelWidth);
    for (int64_t m0 = 0; m0 < rows; m0 += Shape::qk_mr) {
      const int mr = static_cast<int>(imin(Shape::qk_mr, rows - m0));
      const int64_t r = r0 + m0;
      const T* qr[Shape::qk_mr];
      bool factored = keys_fit;
      for (int m = 0; m < mr; ++m) {
        qr[m] = qrow(r + m);
        for (int64_t a = 0; a < A; ++a)
          if (std::fabs(qr[m][a]) > kFactorLimit) factored = false;
      }
      for (int64_t c0 = 0; c0 < ncols; c0 += kPanelWidth)
        additive_rows<V, Shape::qk_mr, Shape::qk_nr>(mr, factored, eq + r * 2 * A, 2 * A,
                                                     ek + c0 * A, qr, kraw + c0 * A, va, A,
                                                     st + m0 * ld_s + c0, ld_s);
    }
  }
};

template <class V, class Shape>
void additive_kernel(const AdditiveParams& p, const Tiling& t, int64_t item_begin,
                     int64_t item_end, void* scratch_void) {
  using T = typename V::T;
  T* scratch = static_cast<T*>(scratch_void);
  AdditiveScorer<V, Shape> scorer(p, t, scratch);
  attention_loop<V, Shape>(p, scorer, t, item_begin, item_end, scratch);
}
