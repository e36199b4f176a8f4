// Scaled-dot-product scores for the shared attention loop
// (attention_loop-inl.h), written once over the Vec layer and instantiated
// per ISA. Included INSIDE a target namespace after attention_loop-inl.h;
// no include guard.
//
// DotScorer: the query block is packed once per work item, pre-multiplied by
// `scale`; each key block is packed into panels of PW = NR*W keys (E rows of
// PW consecutive keys, zero beyond the block) so that an MR x PW register
// tile of scores accumulates E rank-1 updates from broadcast query scalars
// and contiguous panel loads (the GEMM micro-kernel scheme of BLIS).
//
// Numerics: dot products accumulate in the input precision in order e = 0..E-1.
// Speed: see benchmarks/ (GFLOP/s against the machine's matmul roof).

// C[MR x NR*W] = A[MR x E] * Bpanel[E x NR*W]
template <class V, int MR, int NR>
inline void qk_tile(const typename V::T* a, int64_t lda, const typename V::T* b,
                    int64_t E, typename V::T* c, int64_t ldc) {
  using R = typename V::R;
  constexpr int W = V::W;
  R acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = V::zero();
  for (int64_t e = 0; e < E; ++e) {
    R bv[NR];
    for (int n = 0; n < NR; ++n) bv[n] = V::load(b + e * (NR * W) + n * W);
    for (int m = 0; m < MR; ++m) {
      const R av = V::set1(a[m * lda + e]);
      for (int n = 0; n < NR; ++n) acc[m][n] = V::fma(av, bv[n], acc[m][n]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) V::store(c + m * ldc + n * W, acc[m][n]);
}

// Row tails: the tile with a compile-time row count 1..MR.
template <class V, int MR, int NR>
inline void qk_rows(int mr, const typename V::T* a, int64_t lda,
                    const typename V::T* b, int64_t E, typename V::T* c, int64_t ldc) {
  if constexpr (MR > 1) {
    if (mr < MR) return qk_rows<V, MR - 1, NR>(mr, a, lda, b, E, c, ldc);
  }
  qk_tile<V, MR, NR>(a, lda, b, E, c, ldc);
}

// Packs keys [j0, j0 + nk) into panels of PW columns (zero beyond nk).
template <class T, int PW>
inline void pack_key_panels(const T* k, int64_t k_row, int64_t j0, int64_t nk,
                            int64_t E, T* kp) {
  const int64_t npanel = (nk + PW - 1) / PW;
  for (int64_t pn = 0; pn < npanel; ++pn) {
    T* panel = kp + pn * E * PW;
    for (int c = 0; c < PW; ++c) {
      const int64_t j = pn * PW + c;
      if (j < nk) {
        const T* krow = k + (j0 + j) * k_row;
        for (int64_t e = 0; e < E; ++e) panel[e * PW + c] = krow[e];
      } else {
        for (int64_t e = 0; e < E; ++e) panel[e * PW + c] = T(0);
      }
    }
  }
}

template <class V, class Shape>
struct DotScorer {
  using T = typename V::T;
  static constexpr int kPanelWidth = Shape::qk_nr * V::W;

  const SdpaParams& p;
  T* qs;            // rows x E, scaled query block
  T* kp;            // packed key panels
  const T* k = nullptr;
  int64_t rows = 0;

  DotScorer(const SdpaParams& params, const Tiling& t, T* scratch)
      : p(params), qs(scratch + t.off_q), kp(scratch + t.off_k) {}

  void begin_item(int64_t b, int64_t i0, int64_t nrows) {
    rows = nrows;
    const T* q = static_cast<const T*>(p.q.data) + p.q.batch_offset(p.batch, b);
    k = static_cast<const T*>(p.k.data) + p.k.batch_offset(p.batch, b);
    const T scale = static_cast<T>(p.scale);
    for (int64_t r = 0; r < rows; ++r) {
      const T* src = q + (i0 + r) * p.q.row_stride;
      for (int64_t e = 0; e < p.E; ++e) qs[r * p.E + e] = src[e] * scale;
    }
  }

  // Scores of the item's rows against keys [j0, j0 + nk) into st (ld_s),
  // round_up(nk, kPanelWidth) columns.
  void scores(int64_t j0, int64_t nk, int64_t nrows, T* st, int64_t ld_s) {
    const int64_t E = p.E;
    const int64_t ncols = round_up(nk, kPanelWidth);
    pack_key_panels<T, kPanelWidth>(k, p.k.row_stride, j0, nk, E, kp);
    for (int64_t r0 = 0; r0 < nrows; r0 += Shape::qk_mr) {
      const int mr = static_cast<int>(imin(Shape::qk_mr, nrows - r0));
      for (int64_t c0 = 0; c0 < ncols; c0 += kPanelWidth)
        qk_rows<V, Shape::qk_mr, Shape::qk_nr>(mr, qs + r0 * E, E, kp + c0 * E, E,
                                               st + r0 * ld_s + c0, ld_s);
    }
  }
};

template <class V, class Shape>
void sdpa_kernel(const SdpaParams& p, const Tiling& t, int64_t item_begin,
                 int64_t item_end, void* scratch_void) {
  using T = typename V::T;
  T* scratch = static_cast<T*>(scratch_void);
  DotScorer<V, Shape> scorer(p, t, scratch);
  attention_loop<V, Shape>(p, scorer, t, item_begin, item_end, scratch);
}
