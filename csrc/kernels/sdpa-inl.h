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
// int8 keys (a quantised KV cache): packed panels hold code * scale; keys
// read in place give (q . codes) * scale.
// Speed: see benchmarks/ (GFLOP/s against the machine's matmul roof).

// C[MR x NR*W] = A[MR x E] * Bpanel[E x NR*W], plus (kBias) the float mask:
// row m's biases from bias[m] + boff, added by the mask's element rule
// (add_bias_rule, kernel_common-inl.h). Adding them as the tile is stored
// spares the scores a pass of their own, and their loads (prefetched at the
// start) wait on nothing.
template <class V, int MR, int NR, bool kBias = false>
inline void qk_tile(const typename V::T* a, int64_t lda, const typename V::T* b,
                    int64_t E, typename V::T* c, int64_t ldc,
                    const typename V::T* const* bias = nullptr, int64_t boff = 0) {
  using R = typename V::R;
  using T = typename V::T;
  constexpr int W = V::W;
  if constexpr (kBias) {
    static_assert(NR * W * sizeof(T) <= 128, "two cache lines of biases per row");
    for (int m = 0; m < MR; ++m) {  // (the next panel's instead: 2-5% slower)
      __builtin_prefetch(bias[m] + boff);
      __builtin_prefetch(bias[m] + boff + NR * W - 1);
    }
  }
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
  if constexpr (kBias) {
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NR; ++n)
        V::store(c + m * ldc + n * W, add_bias_rule<V>(acc[m][n], V::load(bias[m] + boff + n * W)));
  } else {
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NR; ++n) V::store(c + m * ldc + n * W, acc[m][n]);
  }
}

// Row tails: the tile with a compile-time row count 1..MR.
template <class V, int MR, int NR, bool kBias = false>
inline void qk_rows(int mr, const typename V::T* a, int64_t lda,
                    const typename V::T* b, int64_t E, typename V::T* c, int64_t ldc,
                    const typename V::T* const* bias = nullptr, int64_t boff = 0) {
  if constexpr (MR > 1) {
    if (mr < MR) return qk_rows<V, MR - 1, NR, kBias>(mr, a, lda, b, E, c, ldc, bias, boff);
  }
  qk_tile<V, MR, NR, kBias>(a, lda, b, E, c, ldc, bias, boff);
}

// Scores of R query rows (q, row stride E) against the 4 keys k0 + i * ldk
// into s[r * ld_s + i]: one vector accumulator per (row, key) over E, then a
// horizontal sum. Each key vector is loaded (and widened) once for the R
// rows. pf: the 4 key rows to fetch as these are read (or null).
template <class V, int R, class S>
PYATTN_INLINE void dot4(const typename V::T* q, int64_t E, const S* k0, int64_t ldk, const S* pf,
                        const S* pf_l2, typename V::T* s, int64_t ld_s, const float* kscale) {
  using T = typename V::T;
  using Reg = typename V::R;
  constexpr int W = V::W;
  // One fetch per cache line: every vector of float32, every 4th of int8 codes.
  constexpr int64_t kLineElems = 64 / int64_t(sizeof(S));
  const int64_t ev = E / W * W;
  Reg acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 4; ++i) acc[r][i] = V::zero();
  for (int64_t e = 0; e < ev; e += W) {
    // (a vector at a time: a burst of whole rows stalls on the fill buffers)
    if (pf && e % kLineElems < W)
      for (int64_t i = 0; i < 4; ++i) {
        __builtin_prefetch(pf + i * ldk + e);
        if constexpr (std::is_same_v<S, I8>)
          if (pf_l2) prefetch_l2(pf_l2 + i * ldk + e);
      }
    Reg kv[4];
    for (int i = 0; i < 4; ++i) kv[i] = load_as<V>(k0 + i * ldk + e);
    for (int r = 0; r < R; ++r) {
      const Reg qv = V::load(q + r * E + e);
      for (int i = 0; i < 4; ++i) acc[r][i] = V::fma(qv, kv[i], acc[r][i]);
    }
  }
  if (pf && ev < E)
    for (int64_t i = 0; i < 4; ++i) prefetch_bytes(reinterpret_cast<const char*>(pf + i * ldk + ev), (E - ev) * int64_t(sizeof(S)));
  for (int r = 0; r < R; ++r) {
    T* sr = s + r * ld_s;
    const T* qr = q + r * E;
    V::reduce_sum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3], sr);
    for (int64_t e = ev; e < E; ++e)
      for (int i = 0; i < 4; ++i) sr[i] += qr[e] * static_cast<T>(to_float(k0[i * ldk + e]));
    if constexpr (std::is_same_v<S, I8>)
      for (int i = 0; i < 4; ++i) sr[i] *= kscale[i];
  }
}

// dot4 with a compile-time row count 1..R for rows < R.
template <class V, int R, class S>
PYATTN_INLINE void dot4_rows(int rows, const typename V::T* q, int64_t E, const S* k0, int64_t ldk,
                             const S* pf, const S* pf_l2, typename V::T* s, int64_t ld_s,
                             const float* kscale) {
  if constexpr (R > 1) {
    if (rows < R) return dot4_rows<V, R - 1, S>(rows, q, E, k0, ldk, pf, pf_l2, s, ld_s, kscale);
  }
  dot4<V, R, S>(q, E, k0, ldk, pf, pf_l2, s, ld_s, kscale);
}

// Scores of `rows` query rows (qs, row stride E) against keys k[0, nk) read
// in place (row stride ldk), 4 keys at a time. For groups too small to
// amortise packing (decoding: one or a few query rows per K/V pass), where
// the cost is reading K once from memory. int8 codes: each score is then
// multiplied by its key's scale kscale[j].
template <class V, class S>
inline void dot_rows(const typename V::T* qs, int64_t rows, int64_t E, const S* k,
                     int64_t ldk, int64_t nk, typename V::T* st, int64_t ld_s,
                     const float* kscale = nullptr) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  // Query rows per pass over a chunk of 4 keys (grouped-query heads): as
  // many as the registers hold accumulators for, so that each key vector is
  // loaded (and widened) once and the pass has fewer instructions per byte of
  // K; the stream's fetches, issued by a chunk's first pass, then keep pace.
  constexpr int kRows = W >= 16 ? 4 : 2;
  const int64_t ev = E / W * W;
  // Decoding streams K from memory once: fetch kAhead keys ahead (the
  // hardware prefetcher alone left the stream latency-bound), as the first
  // pass reads these 4.
  constexpr int64_t kAhead = 16;
  int64_t j = 0;
  for (; j + 4 <= nk; j += 4) {
    const S* k0 = k + j * ldk;
    const S* pf = j + kAhead + 4 <= nk ? k0 + kAhead * ldk : nullptr;
    const S* pf_l2 = std::is_same_v<S, I8> && j + kI8AheadL2 + 4 <= nk ? k0 + kI8AheadL2 * ldk : nullptr;
    const float* ks = kscale ? kscale + j : nullptr;
    for (int64_t r = 0; r < rows; r += kRows) {
      const int rb = static_cast<int>(imin(kRows, rows - r));
      dot4_rows<V, kRows, S>(rb, qs + r * E, E, k0, ldk, pf, pf_l2, st + r * ld_s + j, ld_s, ks);
      pf = pf_l2 = nullptr;
    }
  }
  for (; j < nk; ++j) {
    const S* kj = k + j * ldk;
    for (int64_t r = 0; r < rows; ++r) {
      const T* q = qs + r * E;
      R a = V::zero();
      for (int64_t e = 0; e < ev; e += W) a = V::fma(V::load(q + e), load_as<V>(kj + e), a);
      T t = V::reduce_sum(a);
      for (int64_t e = ev; e < E; ++e) t += q[e] * static_cast<T>(to_float(kj[e]));
      if constexpr (std::is_same_v<S, I8>) t *= kscale[j];
      st[r * ld_s + j] = t;
    }
  }
}

// The dot-product Scorer of the shared loop (its contract: the top of
// attention_loop-inl.h). S: the storage type of k (T, or bfloat16/float16/
// int8 codes for T = float; int8 with the scales of SdpaParams::k_scale), SQ
// that of q (S, or T for keys and values stored apart: a KV cache).
template <class V, class Shape, class S = typename V::T, class SQ = S>
struct DotScorer {
  using T = typename V::T;
  static constexpr int kPanelWidth = Shape::qk_nr * V::W;
  static constexpr bool kLog2Scores = true;  // log2 e in the query scale (if scores_in_log2)
  static constexpr bool kAddsBias = true;

  const SdpaParams& p;
  T* qs;            // group rows x E, scaled queries
  T* kp;            // packed key panels of the current block
  const S* kb = nullptr;  // keys of the current block, read in place (direct mode)
  int64_t ldk = 0;        // their row stride
  const float* ksb = nullptr;  // int8 keys: the current block's scales (direct mode)
  bool direct = false;    // group too small to amortise packing

  DotScorer(const SdpaParams& params, const Tiling& t, T* scratch)
      : p(params), qs(scratch + t.off_q), kp(scratch + t.off_k) {}

  PYATTN_OUTLINE void begin_item(int64_t b, int64_t g0, int64_t rows) {
    direct = rows < Shape::qk_mr;
    const SQ* q = static_cast<const SQ*>(p.q.data) + p.q.batch_offset(p.batch, b);
    const T scale = static_cast<T>(scores_in_log2(p) ? p.scale * kLog2e : p.scale);
    const typename V::R vscale = V::set1(scale);
    for (int64_t r = 0; r < rows; ++r) {
      const SQ* src = q + p.q.row_offset(g0 + r, p.L);
      T* dst = qs + r * p.E;
      int64_t e = 0;
      for (; e + V::W <= p.E; e += V::W) V::store(dst + e, V::mul(load_as<V>(src + e), vscale));
      for (; e < p.E; ++e) dst[e] = static_cast<T>(to_float(src[e])) * scale;
    }
  }

  void pack_keys(const KeyRows<S>& keys, int64_t nk) {
    if (!direct) {
      pack_key_panels<V, kPanelWidth>(keys.rows, keys.ld, nk, p.E, kp, keys.scale);
    } else {  // read in place (bfloat16 / float16 / int8 widened as read)
      kb = keys.rows;
      ldk = keys.ld;
      ksb = keys.scale;
    }
  }

  void scores(int64_t r0, int64_t rows, int64_t nk, T* st, int64_t ld_s) const {
    const int64_t E = p.E;
    if (direct) return dot_rows<V>(qs + r0 * E, rows, E, kb, ldk, nk, st, ld_s, ksb);
    const int64_t ncols = round_up(nk, kPanelWidth);
    for (int64_t m0 = 0; m0 < rows; m0 += Shape::qk_mr) {
      const int mr = static_cast<int>(imin(Shape::qk_mr, rows - m0));
      for (int64_t c0 = 0; c0 < ncols; c0 += kPanelWidth)
        qk_rows<V, Shape::qk_mr, Shape::qk_nr>(mr, qs + (r0 + m0) * E, E, kp + c0 * E, E,
                                               st + m0 * ld_s + c0, ld_s);
    }
  }

  bool scores_biased(int64_t r0, int64_t rows, int64_t nk, T* st, int64_t ld_s,
                     const T* const* bias_rows) const {
    if (direct) return false;
    const int64_t E = p.E;
    const int64_t full = nk / kPanelWidth * kPanelWidth;  // panels whose biases all exist
    for (int64_t m0 = 0; m0 < rows; m0 += Shape::qk_mr) {
      const int mr = static_cast<int>(imin(Shape::qk_mr, rows - m0));
      for (int64_t c0 = 0; c0 < full; c0 += kPanelWidth)
        qk_rows<V, Shape::qk_mr, Shape::qk_nr, true>(mr, qs + (r0 + m0) * E, E, kp + c0 * E, E,
                                                     st + m0 * ld_s + c0, ld_s, bias_rows + m0, c0);
      if (full < nk) {  // the last, partial panel: biases added after
        qk_rows<V, Shape::qk_mr, Shape::qk_nr>(mr, qs + (r0 + m0) * E, E, kp + full * E, E,
                                               st + m0 * ld_s + full, ld_s);
        for (int m = 0; m < mr; ++m) {
          const char* brow = reinterpret_cast<const char*>(bias_rows[m0 + m] + full);
          apply_mask_row<V>(MaskKind::additive, brow, 1, nk - full, st + (m0 + m) * ld_s + full, brow);
        }
      }
    }
    return true;
  }
};

// S: the storage type of k and v (T, or bfloat16/float16/int8 for T = float);
// SQ: that of q (S, or T for keys and values stored apart: a KV cache);
// Var: the score variants compiled in (kernel_switch.h).
template <class V, class Shape, class S, class Var, class SQ = S>
void sdpa_kernel(const SdpaParams& p, const Tiling& t, WorkItems& work, void* scratch_void) {
  using T = typename V::T;
  T* scratch = static_cast<T*>(scratch_void);
  DotScorer<V, Shape, S, SQ> scorer(p, t, scratch);
  KVBlockSource<V, S, S> kv(p, p.k, &p.k_scale, t, scratch, Shape::strip);
  attention_loop<V, Shape, DotScorer<V, Shape, S, SQ>, KVBlockSource<V, S, S>, Var>(p, scorer, kv, t, work,
                                                                                    scratch);
}
