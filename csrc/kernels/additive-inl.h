// Additive (Bahdanau) scores for the shared attention loop
// (attention_loop-inl.h), written once over the Vec layer and instantiated
// per ISA. Included INSIDE a target namespace after attention_loop-inl.h;
// no include guard.
//
//   s[i, j] = sum_a v_a[a] * tanh(qp[i, a] + kp[j, a])
//
// AdditiveScorer has the Scorer interface (attention_loop-inl.h); its keys
// are the projected keys kp (KeyRows of a KVBlockSource). Keys are packed by
// pack_key_panels (kernel_common-inl.h): panels of PW = NR*W consecutive keys, A rows of PW values,
// so an MR x PW register tile of scores accumulates over a = 0..A-1 from
// broadcast query scalars and contiguous panel loads: no horizontal sums, and
// the (L, S, A) tensor never exists (memory O((rows + keys) A) per thread).
// Groups of fewer than MR rows (decoding) skip the panels: each key row is
// read in place, vectorised over a, with one horizontal sum per score
// (additive_keys_in_place).
//
// Two ways to score, chosen per (MR rows x key block) -- per key in place --
// from the data:
//
// * Factorised (every |qp| and |kp| of the tile <= kFactorLimit, the usual
//   case): with x = qp + kp,  tanh x = (z - 1) / (z + 1),  z = e^{2qp} e^{2kp}.
//   e^{2qp} (and v_a e^{2qp}) are computed once per query row, e^{2kp} once
//   per packed key block (vexp), so each of the L*S*A terms costs
//     num = (v_a e^{2qp}) e^{2kp} - v_a,  den = e^{2qp} e^{2kp} + 1,
//     acc += num * recip(den)
//   i.e. 3 FMAs and a reciprocal (rcp + one Newton step in float) instead of
//   a tanh. The query side lives in panels of MR rows (per a: MR values
//   e^{2qp}, then MR values v_a e^{2qp}), so every broadcast of a tile comes
//   from one pointer. kFactorLimit (20 float, 170 double) keeps every factor
//   and product normal. Error: e^{2qp}, e^{2kp} are within 2 ulp (vexp), so
//   z is within ~5 ulp and tanh(qp + kp) within ~2 eps ABSOLUTE (measured
//   over 1e5-4e6 pairs with |qp|, |kp| up to the limit: 2.3e-7 = 1.94 eps
//   float with AVX2, 1.5e-7 with AVX-512 and scalar; 2.4e-16 = 1.1 eps
//   double) -- the order of rounding qp + kp itself; tiny tanh values have a
//   larger RELATIVE error, which the scores (sums of A terms ~|v_a|) do not
//   see.
// * Direct (otherwise: huge, infinite projections): acc += v_a vtanh(qp + kp)
//   with vtanh from vec_math-inl.h.
// NaN in qp/kp propagates through either path to the scores it touches.
// Which path a tile takes depends only on the data and the tiling, never on
// the thread running it, so results stay bitwise identical for every
// num_threads. Each score sums its A terms in order a = 0..A-1 (in place:
// in W lanes, then one horizontal sum).
//
// Speed (B=1, L=S=1024, A=Ev=128, float, one core of the development
// machine): ~19 ms with AVX-512, ~27 ms with AVX2, i.e. 5-7e9 terms per
// second including softmax and P V (the scores alone: ~0.17 ns per term with
// AVX2, 3 cycles per 8 terms at 2.3 GHz -- the 5 FMAs + rcp of a term on two
// FMA ports), against ~0.35 s for NumPy's broadcast recipe and ~0.65 s for
// torch's; 1.9x from one to two threads. Cases and baselines:
// benchmarks/bench_additive.py.

// Factorised tile: C[MR x NR*W] = sum_a v_a[a] tanh(qp + kp) from the query
// panel eq (per a: e^{2qp} of its rows at [0, ..), v_a e^{2qp} at [off, ..);
// ldp per a) and the key panel ek = e^{2kp} (A rows of NR*W).
template <class V, int MR, int NR>
inline void additive_tile_factored(const typename V::T* eq, int64_t ldp, int64_t off,
                                   const typename V::T* ek, const typename V::T* va, int64_t A,
                                   typename V::T* c, int64_t ldc) {
  using R = typename V::R;
  using T = typename V::T;
  constexpr int W = V::W;
  R acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = V::zero();
  const R one = V::set1(T(1));
  const T* eqv = eq + off;
  for (int64_t a = 0; a < A; ++a) {
    R b[NR];
    for (int n = 0; n < NR; ++n) b[n] = V::load(ek + a * (NR * W) + n * W);
    const R w = V::set1(va[a]);
    for (int m = 0; m < MR; ++m) {
      const R x = V::set1(eq[a * ldp + m]);
      const R xv = V::set1(eqv[a * ldp + m]);
      for (int n = 0; n < NR; ++n) {
        const R num = V::fms(xv, b[n], w);   // v_a (z - 1)
        const R den = V::fma(x, b[n], one);  // z + 1
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
inline void additive_rows(int mr, bool factored, const typename V::T* eq, int64_t ldp,
                          int64_t off, const typename V::T* ek, const typename V::T* const* qp,
                          const typename V::T* kraw, const typename V::T* va, int64_t A,
                          typename V::T* c, int64_t ldc) {
  if constexpr (MR > 1) {
    if (mr < MR)
      return additive_rows<V, MR - 1, NR>(mr, factored, eq, ldp, off, ek, qp, kraw, va, A, c, ldc);
  }
  if (factored)
    additive_tile_factored<V, MR, NR>(eq, ldp, off, ek, va, A, c, ldc);
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

// Loaders of the a-chunks in additive_keys_in_place: whole vectors or the
// zero-padded tail. Functors, not lambdas: GCC treats a lambda that returns
// a vector as if it were outside the target region (-Wpsabi).
template <class V>
struct LoadWhole {
  typename V::R operator()(const typename V::T* x) const { return V::load(x); }
};
template <class V>
struct LoadTail {
  int n;
  typename V::R operator()(const typename V::T* x) const { return V::load_tail(x, n); }
};

// In-place scores for groups of fewer than MR query rows (decoding: one row
// per pass over the keys), where packing a key block would serve too few
// rows: each key row is read where it lies, vectorised over a, e^{2kp} made
// on the fly and shared by the ROWS rows, one horizontal sum per score. eq
// holds per row [e^{2qp} (A) | v_a e^{2qp} (A)]; qr the rows of qp. A key
// whose |kp| exceeds `limit` somewhere (or rows that do: !rows_fit) is
// scored again by the direct tanh. The a-tail is loaded zero-padded
// (load_tail), and padded terms are exactly 0 on either path.
template <class V, int ROWS>
inline void additive_keys_in_place(const typename V::T* eq, const typename V::T* const* qr,
                                   const typename V::T* k, int64_t ldk, int64_t nk,
                                   const typename V::T* va, int64_t A, bool rows_fit,
                                   typename V::T limit, typename V::T* st, int64_t ld_s) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  const int64_t a_full = A / W * W;
  const int tail = static_cast<int>(A - a_full);
  const R one = V::set1(T(1));
  for (int64_t j = 0; j < nk; ++j) {
    const T* kj = k + j * ldk;
    R acc[ROWS];
    for (int r = 0; r < ROWS; ++r) acc[r] = V::zero();
    R kmax = V::zero();
    // Terms a in [a0, a0 + W): key chunk kv, v_a chunk w; `load` reads the
    // rows' chunks (whole or tail).
    auto factored = [&](R kv, R w, int64_t a0, auto load) {
      kmax = V::max(kmax, V::abs(kv));
      const R ek = vexp<V>(V::add(kv, kv));
      for (int r = 0; r < ROWS; ++r) {
        const T* e = eq + r * 2 * A + a0;
        const R num = V::fms(load(e + A), ek, w);
        const R den = V::fma(load(e), ek, one);
        acc[r] = V::fma(num, V::recip(den), acc[r]);
      }
    };
    const LoadWhole<V> whole;
    const LoadTail<V> part{tail};
    for (int64_t a = 0; a < a_full; a += W) factored(V::load(kj + a), V::load(va + a), a, whole);
    if (tail) factored(part(kj + a_full), part(va + a_full), a_full, part);
    // NaN in kmax may or may not survive the reduction; NaN propagates
    // through either path.
    if (!rows_fit || !(V::reduce_max(kmax) <= limit)) {
      for (int r = 0; r < ROWS; ++r) acc[r] = V::zero();
      auto direct = [&](R kv, R w, int64_t a0, auto load) {
        for (int r = 0; r < ROWS; ++r)
          acc[r] = V::fma(w, vtanh<V>(V::add(load(qr[r] + a0), kv)), acc[r]);
      };
      for (int64_t a = 0; a < a_full; a += W) direct(V::load(kj + a), V::load(va + a), a, whole);
      if (tail) direct(part(kj + a_full), part(va + a_full), a_full, part);
    }
    for (int r = 0; r < ROWS; ++r) st[r * ld_s + j] = V::reduce_sum(acc[r]);
  }
}

template <class V, int MAX_ROWS>
inline void additive_in_place_rows(int rows, const typename V::T* eq,
                                   const typename V::T* const* qr, const typename V::T* k,
                                   int64_t ldk, int64_t nk, const typename V::T* va, int64_t A,
                                   bool rows_fit, typename V::T limit, typename V::T* st,
                                   int64_t ld_s) {
  if constexpr (MAX_ROWS > 1) {
    if (rows < MAX_ROWS)
      return additive_in_place_rows<V, MAX_ROWS - 1>(rows, eq, qr, k, ldk, nk, va, A, rows_fit,
                                                     limit, st, ld_s);
  }
  additive_keys_in_place<V, MAX_ROWS>(eq, qr, k, ldk, nk, va, A, rows_fit, limit, st, ld_s);
}

template <class V, class Shape>
struct AdditiveScorer {
  using T = typename V::T;
  static constexpr int MR = Shape::qk_mr;
  static constexpr int kPanelWidth = Shape::qk_nr * V::W;
  static constexpr bool kLog2Scores = false;
  static constexpr bool kAddsBias = false;  // (the loop adds a float mask)
  // Largest |qp|, |kp| of the factorised path: e^{4 limit} and e^{-4 limit}
  // stay normal in T (float: e^{+-80}; double: e^{+-680}).
  static constexpr T kFactorLimit = sizeof(T) == 4 ? T(20) : T(170);
  // Largest |v_a| of the factorised path: its products v_a e^{2qp} e^{2kp}
  // (up to |v_a| e^{4 limit}) must stay finite (float: 1e3 * e^80 ~ 6e37).
  static constexpr T kVaLimit = sizeof(T) == 4 ? T(1e3) : T(1e12);

  const AdditiveParams& p;
  const int64_t A;
  // Scratch (the driver sizes the tiling with E := 2A):
  T* eq;            // group rows x 2A: query panels of MR rows (see begin_item)
  T* ek;            // key block: panels of e^{2kp}          (kpad x A)
  T* kraw;          // key block: panels of kp itself        (kpad x A)
  const T* va;
  const T* q = nullptr;   // qp of the current batch element
  int64_t g0 = 0;         // first (folded) query row of the group
  int64_t grows = 0;      // rows in the group
  bool in_place = false;  // group of < MR rows: keys read in place, not packed
  const T* kb = nullptr;  // in place: the current key block
  bool keys_fit = false;  // every |kp| of the packed block <= kFactorLimit
  bool va_fits = false;   // every |v_a| <= kVaLimit (else: direct tanh only)

  AdditiveScorer(const AdditiveParams& params, const Tiling& t, T* scratch)
      : p(params),
        A(params.A),
        eq(scratch + t.off_q),
        ek(scratch + t.off_k),
        kraw(scratch + t.off_k + round_up(t.k_block, kPadElems) * params.A),
        va(static_cast<const T*>(params.v_a)) {
    va_fits = true;
    for (int64_t a = 0; a < A; ++a) va_fits = va_fits && std::fabs(va[a]) <= kVaLimit;  // NaN: false
  }

  const T* qrow(int64_t r) const { return q + p.qp.row_offset(g0 + r, p.L); }
  // Rows in the query panel holding group row r (the last one may be short).
  int64_t panel_rows(int64_t r) const { return imin(MR, grows - r / MR * MR); }

  // Query panels: group rows [pi*MR, pi*MR + n) (n = panel_rows) stored per
  // a as n values e^{2qp} then n values v_a e^{2qp}, so a tile's broadcasts
  // all come from one pointer; exactly rows x 2A elements in all.
  void begin_item(int64_t b, int64_t first_row, int64_t rows) {
    q = static_cast<const T*>(p.qp.data) + p.qp.batch_offset(p.batch, b);
    g0 = first_row;
    grows = rows;
    in_place = rows < MR;
    if (in_place) {  // rows of [e^{2qp} | v_a e^{2qp}]
      for (int64_t r = 0; r < rows; ++r) {
        T* e = eq + r * 2 * A;
        exp_twice<V>(qrow(r), A, e);
        for (int64_t a = 0; a < A; ++a) e[A + a] = va[a] * e[a];
      }
      return;
    }
    T* row_exp = ek;  // the key panels are free until pack_keys: A values of scratch
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = panel_rows(r);
      T* panel = eq + r / MR * MR * 2 * A;
      exp_twice<V>(qrow(r), A, row_exp);
      const int64_t m = r % MR;
      for (int64_t a = 0; a < A; ++a) {
        panel[a * 2 * n + m] = row_exp[a];
        panel[a * 2 * n + n + m] = va[a] * row_exp[a];
      }
    }
  }

  void pack_keys(const KeyRows<T>& keys, int64_t nk) {
    if (in_place) {
      kb = keys.rows;
      return;
    }
    pack_key_panels<V, kPanelWidth>(keys.rows, keys.ld, nk, A, kraw);
    // The panels hold round_up(nk, kPanelWidth) * A values: whole vectors.
    const int64_t n = round_up(nk, kPanelWidth) * A;
    auto kmax = V::zero();
    for (int64_t i = 0; i < n; i += V::W) kmax = V::max(kmax, V::abs(V::load(kraw + i)));
    // A NaN may or may not survive the reduction: it propagates either way.
    keys_fit = va_fits && V::reduce_max(kmax) <= kFactorLimit;
    if (keys_fit) exp_twice<V>(kraw, n, ek);
  }

  bool rows_fit(const T* const* qr, int rows) const {
    for (int m = 0; m < rows; ++m)
      for (int64_t a = 0; a < A; ++a)
        if (std::fabs(qr[m][a]) > kFactorLimit) return false;
    return true;
  }

  // Scores of group rows [r0, r0 + rows) against the packed keys into st
  // (row stride ld_s), round_up(nk, kPanelWidth) columns. Register tiles
  // never straddle two query panels.
  void scores(int64_t r0, int64_t rows, int64_t nk, T* st, int64_t ld_s) const {
    if (in_place) {
      const T* qr[MR];
      for (int m = 0; m < rows; ++m) qr[m] = qrow(r0 + m);
      additive_in_place_rows<V, (MR > 1 ? MR - 1 : 1)>(
          static_cast<int>(rows), eq + r0 * 2 * A, qr, kb, p.kp.row_stride, nk, va, A,
          va_fits && rows_fit(qr, static_cast<int>(rows)), kFactorLimit, st, ld_s);
      return;
    }
    const int64_t ncols = round_up(nk, kPanelWidth);
    for (int64_t r = r0; r < r0 + rows;) {
      const int64_t n = panel_rows(r), m0 = r % MR;
      const int mr = static_cast<int>(imin(n - m0, r0 + rows - r));
      const T* panel = eq + r / MR * MR * 2 * A + m0;
      const T* qr[MR];
      for (int m = 0; m < mr; ++m) qr[m] = qrow(r + m);
      const bool factored = keys_fit && rows_fit(qr, mr);
      for (int64_t c0 = 0; c0 < ncols; c0 += kPanelWidth)
        additive_rows<V, MR, Shape::qk_nr>(mr, factored, panel, 2 * n, n, ek + c0 * A, qr,
                                           kraw + c0 * A, va, A, st + (r - r0) * ld_s + c0, ld_s);
      r += mr;
    }
  }
};

template <class V, class Shape>
void additive_kernel(const AdditiveParams& p, const Tiling& t, WorkItems& work,
                     void* scratch_void) {
  using T = typename V::T;
  T* scratch = static_cast<T*>(scratch_void);
  AdditiveScorer<V, Shape> scorer(p, t, scratch);
  KVBlockSource<V, T, T> kv(p, p.kp, nullptr, t, scratch, Shape::strip);
  attention_loop<V, Shape>(p, scorer, kv, t, work, scratch);
}
