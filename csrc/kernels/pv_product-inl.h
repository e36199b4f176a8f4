// P V of the attention loop: a strip's probabilities times the values of a
// key block, added to the rows' accumulators with MR x NC register tiles.
// Values come as ValueRows (kv_block_source-inl.h): read in place in their
// storage type, or converted. Included INSIDE a target namespace after
// kv_block_source-inl.h; no include guard.
//
// Each accumulator element sums over the keys in order j = 0, 1, ...
// whatever the tile shape, so every path gives a row the same bits.

// C[MR x NC*W] += P[MR x nk] * B[nk x NC*W]   (probabilities times values;
// B in the storage type SB: packed V::T rows, or values read in place)
template <class V, int MR, int NC, class SB>
inline void pv_tile(const typename V::T* p, int64_t ldp, int64_t nk,
                    const SB* b, int64_t ldb, typename V::T* c,
                    int64_t ldc) {
  using R = typename V::R;
  constexpr int W = V::W;
  R acc[MR][NC];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NC; ++n) acc[m][n] = V::load(c + m * ldc + n * W);
  for (int64_t j = 0; j < nk; ++j) {
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
template <class V, int MR, int NC, class SB>
inline void pv_rows(int mr, const typename V::T* p, int64_t ldp, int64_t nk,
                    const SB* b, int64_t ldb, typename V::T* c, int64_t ldc) {
  if constexpr (MR > 1) {
    if (mr < MR) return pv_rows<V, MR - 1, NC>(mr, p, ldp, nk, b, ldb, c, ldc);
  }
  pv_tile<V, MR, NC>(p, ldp, nk, b, ldb, c, ldc);
}

template <class V, int MR, int NC, class SB>
inline void pv_cols(int nvec, int mr, const typename V::T* p, int64_t ldp, int64_t nk,
                    const SB* b, int64_t ldb, typename V::T* c, int64_t ldc) {
  if constexpr (NC > 1) {
    if (nvec < NC) return pv_cols<V, MR, NC - 1>(nvec, mr, p, ldp, nk, b, ldb, c, ldc);
  }
  pv_rows<V, MR, NC>(mr, p, ldp, nk, b, ldb, c, ldc);
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

// acc[0, ev_pad) += p[0, tk) V for one row, NC vectors of columns at a time.
template <class V, int NC, class SB>
PYATTN_INLINE void pv_one_row(const typename V::T* p, int64_t tk, const SB* b, int64_t ldb,
                              typename V::T* acc, int64_t ev_pad) {
  constexpr int W = V::W;
  for (int64_t c0 = 0; c0 < ev_pad; c0 += NC * W) {
    const int nvec = static_cast<int>(imin(NC, (ev_pad - c0) / W));
    pv_cols<V, 1, NC>(nvec, 1, p, 0, tk, b + c0, ldb, acc + c0, ev_pad);
  }
}

// acc rows [0, srows) (row stride ev_pad) += P V, with P = st (srows x tk,
// row stride ld_s: the strip's probabilities, whose sums and weights have
// been taken) and the values vr of the block's first tk keys. int8 values:
// their scales are folded into P first.
template <class V, class Shape, class SV>
PYATTN_INLINE void pv_strip(typename V::T* st, int64_t ld_s, int64_t srows, int64_t tk,
                            const ValueRows<typename V::T, SV>& vr, int64_t Ev,
                            typename V::T* acc, int64_t ev_pad) {
  using T = typename V::T;
  constexpr int W = V::W;
  if constexpr (std::is_same_v<SV, I8>) fold_value_scales<V>(st, ld_s, srows, tk, vr.scale, vr.scale_finite);
  if (!vr.finite) {  // rare: keep a hidden NaN/inf value out of rows that cannot see it
    pv_skip_zeros<T>(st, ld_s, srows, tk, vr.converted, ev_pad, Ev, acc, ev_pad);
    return;
  }
  if (srows == 1) {
    // One row (decoding without grouped heads): with Shape::pv_nc
    // accumulators, P V chained every key on the FMA latency (AVX-512:
    // 2 chains, 4 passes over P for Ev = 128); kRowNC independent
    // ones keep the FMA ports busy. Each element still sums over the
    // keys in order: the same bits.
    constexpr int kRowNC = W >= 16 ? 8 : W >= 8 ? 6 : Shape::pv_nc;
    if (vr.in_place)
      pv_one_row<V, kRowNC>(st, tk, vr.in_place, vr.ld, acc, ev_pad);
    else
      pv_one_row<V, kRowNC>(st, tk, vr.converted, ev_pad, acc, ev_pad);
    return;
  }
  const SV* vin = vr.in_place;
  const T* vp = vr.converted;
  for (int64_t m0 = 0; m0 < srows; m0 += Shape::pv_mr) {
    const int mr = static_cast<int>(imin(Shape::pv_mr, srows - m0));
    for (int64_t c0 = 0; c0 < ev_pad; c0 += Shape::pv_nc * W) {
      const int nvec = static_cast<int>(imin(Shape::pv_nc, (ev_pad - c0) / W));
      T* a = acc + m0 * ev_pad + c0;
      if constexpr (std::is_same_v<SV, T>) {  // one call site (keeps the loop small)
        const T* vb = vin ? vin : vp;
        pv_cols<V, Shape::pv_mr, Shape::pv_nc>(nvec, mr, st + m0 * ld_s, ld_s, tk, vb + c0,
                                               vin ? vr.ld : ev_pad, a, ev_pad);
      } else if (vin) {
        pv_cols<V, Shape::pv_mr, Shape::pv_nc>(nvec, mr, st + m0 * ld_s, ld_s, tk, vin + c0,
                                               vr.ld, a, ev_pad);
      } else {
        pv_cols<V, Shape::pv_mr, Shape::pv_nc>(nvec, mr, st + m0 * ld_s, ld_s, tk, vp + c0,
                                               ev_pad, a, ev_pad);
      }
    }
  }
}
