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
// kStream: B is read from memory (values in place, decoding): vectors
// [0, pf_vecs) of the row kAhead ahead are fetched as this one is read, if
// that row is one of B's first pf_rows (a tile narrower than the row fetches
// the whole row on its first pass; the later passes find it in cache).
template <class V, int MR, int NC, class SB, bool kStream = false>
inline void pv_tile(const typename V::T* p, int64_t ldp, int64_t nk,
                    const SB* b, int64_t ldb, typename V::T* c,
                    int64_t ldc, int pf_vecs = NC, int64_t pf_rows = 0) {
  using R = typename V::R;
  constexpr int W = V::W;
  constexpr int64_t kAhead = 16;
  // bfloat16 values read in place: each pair of vectors is widened from one
  // load with half the conversions (load_bf16_pair), the accumulators
  // holding the pair's even and odd columns.
  constexpr bool kPairs = std::is_same_v<SB, Bf16> && NC % 2 == 0 && V::kHasBf16Pairs;
  R acc[MR][NC];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NC; ++n) acc[m][n] = V::load(c + m * ldc + n * W);
  if constexpr (kPairs) {
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NC; n += 2) V::deinterleave(acc[m][n], acc[m][n + 1], &acc[m][n], &acc[m][n + 1]);
  }
  for (int64_t j = 0; j < nk; ++j) {
    if constexpr (kStream) {  // one fetch per cache line (a vector of int8 codes is 16 bytes)
      constexpr int kVecsPerLine = 64 / (W * int(sizeof(SB))) > 1 ? 64 / (W * int(sizeof(SB))) : 1;
      if (j + kAhead < pf_rows)
        for (int n = 0; n < pf_vecs; n += kVecsPerLine) __builtin_prefetch(b + (j + kAhead) * ldb + n * W);
      if constexpr (std::is_same_v<SB, I8>)
        if (j + kI8AheadL2 < pf_rows)
          for (int n = 0; n < pf_vecs; n += kVecsPerLine) prefetch_l2(b + (j + kI8AheadL2) * ldb + n * W);
    }
    R bv[NC];
    if constexpr (kPairs) {
      for (int n = 0; n < NC; n += 2) V::load_bf16_pair(&b[j * ldb + n * W].bits, &bv[n], &bv[n + 1]);
    } else {
      for (int n = 0; n < NC; ++n) bv[n] = load_as<V>(b + j * ldb + n * W);
    }
    for (int m = 0; m < MR; ++m) {
      const R av = V::set1(p[m * ldp + j]);
      for (int n = 0; n < NC; ++n) acc[m][n] = V::fma(av, bv[n], acc[m][n]);
    }
  }
  if constexpr (kPairs) {
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NC; n += 2) V::interleave(acc[m][n], acc[m][n + 1], &acc[m][n], &acc[m][n + 1]);
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NC; ++n) V::store(c + m * ldc + n * W, acc[m][n]);
}

// Row tails (1..MR rows) and column tails (1..NC vectors) of P V.
template <class V, int MR, int NC, class SB, bool kStream = false>
inline void pv_rows(int mr, const typename V::T* p, int64_t ldp, int64_t nk,
                    const SB* b, int64_t ldb, typename V::T* c, int64_t ldc, int pf_vecs = NC,
                    int64_t pf_rows = 0) {
  if constexpr (MR > 1) {
    if (mr < MR) return pv_rows<V, MR - 1, NC, SB, kStream>(mr, p, ldp, nk, b, ldb, c, ldc, pf_vecs, pf_rows);
  }
  pv_tile<V, MR, NC, SB, kStream>(p, ldp, nk, b, ldb, c, ldc, pf_vecs, pf_rows);
}

template <class V, int MR, int NC, class SB, bool kStream = false>
inline void pv_cols(int nvec, int mr, const typename V::T* p, int64_t ldp, int64_t nk,
                    const SB* b, int64_t ldb, typename V::T* c, int64_t ldc, int pf_vecs,
                    int64_t pf_rows = 0) {
  if constexpr (NC > 1) {
    if (nvec < NC) return pv_cols<V, MR, NC - 1, SB, kStream>(nvec, mr, p, ldp, nk, b, ldb, c, ldc, pf_vecs, pf_rows);
  }
  pv_rows<V, MR, NC, SB, kStream>(mr, p, ldp, nk, b, ldb, c, ldc, pf_vecs, pf_rows);
}

// acc[rows x ev_pad] += P[rows x nk] * B[nk x ev_pad] for one strip of
// probabilities (row stride ldp), B in the storage type SB (row stride ldb).
// A few rows (decoding, with grouped heads or not) take streaming tiles as
// wide as the registers allow (kAccRegs accumulators): one row gets
// independent accumulators over the row (with Shape::pv_nc, P V chained
// every key on the FMA latency), 2-4 rows go in as few passes as possible.
// When B is read from memory (`streamed`: values in place) and takes more
// than one pass (2-4 rows; one row on AVX2: 3 passes at Ev = 128), the
// passes go over B a chunk of keys at a time (kChunkBytes of B), the first
// fetching the whole row ahead: the chunk is still in L1 for the later
// passes. (Passes over the whole block would each stream part of every row
// from memory, or read it back from L2 while no fetch is under way.) Each
// element still sums over the keys in order: the same bits either way.
template <class V, class Shape, class SB>
inline void pv_block(int64_t rows, const typename V::T* p, int64_t ldp, int64_t nk, const SB* b,
                     int64_t ldb, typename V::T* acc, int64_t ev_pad, bool streamed) {
  constexpr int W = V::W;
  constexpr int kAccRegs = W >= 16 ? 16 : W >= 8 ? 8 : Shape::pv_mr * Shape::pv_nc;
  constexpr int kRowNC = W >= 16 ? 8 : W >= 8 ? 6 : Shape::pv_nc;
  constexpr int64_t kChunkBytes = 16 << 10;
  const int ev = static_cast<int>(ev_pad / W);
  const int64_t row_bytes = ev_pad * int64_t(sizeof(SB));
  const int64_t chunk = imax(16, kChunkBytes / imax(row_bytes, 1));
  // The passes of an MR x NC tile over keys [0, nk): chunk by chunk, the
  // first pass fetching whole rows ahead, or each pass over the whole block,
  // fetching its own columns ahead.
  auto passes = [&](auto mr_c, auto nc_c, bool chunked) {
    constexpr int MR = decltype(mr_c)::value, NC = decltype(nc_c)::value;
    const int mr = static_cast<int>(rows);
    const int64_t keys_per_pass = chunked ? chunk : nk;
    for (int64_t j0 = 0; j0 < nk; j0 += keys_per_pass) {
      const int64_t nj = imin(keys_per_pass, nk - j0);
      for (int64_t c0 = 0; c0 < ev_pad; c0 += NC * W) {
        const int nvec = static_cast<int>(imin(NC, (ev_pad - c0) / W));
        const int pf_vecs = chunked ? (c0 == 0 ? ev : 0) : nvec;
        pv_cols<V, MR, NC, SB, true>(nvec, mr, p + j0, ldp, nj, b + j0 * ldb + c0, ldb, acc + c0, ev_pad,
                                     pf_vecs, nk - j0);
      }
    }
  };
  using One = std::integral_constant<int, 1>;
  if (rows == 1) return passes(One{}, std::integral_constant<int, kRowNC>{}, streamed && ev_pad > kRowNC * W);
  if (streamed && rows <= 4) {
    if (rows == 2) return passes(std::integral_constant<int, 2>{}, std::integral_constant<int, kAccRegs / 2>{}, true);
    return passes(std::integral_constant<int, 4>{}, std::integral_constant<int, kAccRegs / 4>{}, true);
  }
  for (int64_t m0 = 0; m0 < rows; m0 += Shape::pv_mr) {
    const int mr = static_cast<int>(imin(Shape::pv_mr, rows - m0));
    for (int64_t c0 = 0; c0 < ev_pad; c0 += Shape::pv_nc * W) {
      const int nvec = static_cast<int>(imin(Shape::pv_nc, (ev_pad - c0) / W));
      pv_cols<V, Shape::pv_mr, Shape::pv_nc>(nvec, mr, p + m0 * ldp, ldp, nk, b + c0, ldb,
                                             acc + m0 * ev_pad + c0, ev_pad, Shape::pv_nc);
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

// acc rows [0, srows) (row stride ev_pad) += P V, with P = st (srows x tk,
// row stride ld_s: the strip's probabilities, whose sums and weights have
// been taken) and the values vr of the block's first tk keys (of nk). int8
// values: their scales are folded into P first.
//
// Values read in place by a group of one strip (decoding: vr.check_by_acc)
// are checked for inf/NaN by P V's results, not by a pass of their own: the
// check pass streamed V from memory, and P V read it again (decoding at 80%
// of the read bandwidth instead of 90%). acc stays finite only if every
// value P V read was finite (p * inf is inf or NaN, 0 * inf NaN, and neither
// goes away), so a finite acc means all_finite would have said so too;
// otherwise acc is restored from a copy kept in vr.converted (unused when V
// is read in place) and the block takes the path it always took.
template <class V, class Shape, class SV>
PYATTN_INLINE void pv_strip(typename V::T* st, int64_t ld_s, int64_t srows, int64_t tk, int64_t nk,
                            const ValueRows<typename V::T, SV>& vr, int64_t Ev,
                            typename V::T* acc, int64_t ev_pad) {
  using T = typename V::T;
  if constexpr (std::is_same_v<SV, I8>) fold_value_scales<V>(st, ld_s, srows, tk, vr.scale, vr.scale_finite);
  T* vp = vr.converted;
  if (!vr.finite) {  // rare: keep a hidden NaN/inf value out of rows that cannot see it
    pv_skip_zeros<T>(st, ld_s, srows, tk, vp, ev_pad, Ev, acc, ev_pad);
    return;
  }
  const SV* vin = vr.in_place;
  if (vin && vr.check_by_acc) {
    for (int64_t i = 0; i < srows * ev_pad; ++i) vp[i] = acc[i];  // (restored below if needed)
    pv_block<V, Shape>(srows, st, ld_s, tk, vin, vr.ld, acc, ev_pad, true);
    if (rows_finite<V>(acc, ev_pad, srows, Ev) &&
        (tk == nk || all_finite<V>(vin + tk * vr.ld, vr.ld, nk - tk, Ev)))
      return;
    for (int64_t i = 0; i < srows * ev_pad; ++i) acc[i] = vp[i];
    if (all_finite<V>(vin, vr.ld, nk, Ev)) {  // (acc overflowed, V is finite)
      pv_block<V, Shape>(srows, st, ld_s, tk, vin, vr.ld, acc, ev_pad, true);
    } else {
      convert_rows<V>(vin, vr.ld, nk, Ev, vp, ev_pad);
      pv_skip_zeros<T>(st, ld_s, srows, tk, vp, ev_pad, Ev, acc, ev_pad);
    }
    return;
  }
  if (vin)
    pv_block<V, Shape>(srows, st, ld_s, tk, vin, vr.ld, acc, ev_pad, true);
  else
    pv_block<V, Shape>(srows, st, ld_s, tk, static_cast<const T*>(vp), ev_pad, acc, ev_pad, false);
}
