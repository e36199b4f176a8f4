// Helpers shared by the kernels (the attention loop and its parts, the
// scorers of sdpa-inl.h and additive-inl.h): small integer helpers, loads
// and conversions from the storage types, prefetching, the float mask's
// element rule (written once here) and the packing of key blocks into
// panels. Included INSIDE a target namespace after the Vec types, before
// every other kernel header; no include guard.

template <class T>
inline T neg_inf() { return -std::numeric_limits<T>::infinity(); }

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// W elements at p as a vector of V::T, from the storage type S (T, or
// bfloat16 / float16 / int8 codes -- without their scale -- for a float Vec).
template <class V, class S>
inline typename V::R load_as(const S* p) {
  if constexpr (std::is_same_v<S, Bf16>) return V::load_bf16(&p->bits);
  else if constexpr (std::is_same_v<S, F16>) return V::load_f16(&p->bits);
  else if constexpr (std::is_same_v<S, I8>) return V::load_i8(&p->code);
  else return V::load(p);
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

// int8 codes (a quantised KV cache) streamed by decoding: besides the fetch
// into L1 kAhead rows ahead, one into L2 this many rows ahead. Their loop
// is bound by the conversions of the codes, and the L1 fetch alone, 2 KiB
// ahead at E = 128, did not cover the memory's latency.
constexpr int64_t kI8AheadL2 = 64;
PYATTN_INLINE void prefetch_l2(const void* p) { __builtin_prefetch(p, 0, 2); }

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

// The float mask's element rule, written once (used by apply_mask_row, and
// by sdpa-inl.h's qk_tile as it stores a register tile): s + bias, but a -inf bias hides the
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

// Packs keys k[0, nk) (row stride k_row: one key block, KeyRows) into panels
// of PW columns (zero beyond nk), converting from the storage type S (int8
// codes: times key j's scale kscale[j], so the panels hold the dequantised
// keys). Used by every scorer that packs keys. Where the Vec can transpose, whole
// W x W blocks (W keys x W elements) go through registers: 2 W loads and
// stores and a few shuffles per W^2 elements instead of a scalar load and
// store each (key packing was 3-4% of a long prefill call).
template <class V, int PW, class S>
PYATTN_OUTLINE void pack_key_panels(const S* k, int64_t k_row, int64_t nk,
                            int64_t E, typename V::T* kp, const float* kscale = nullptr) {
  using T = typename V::T;
  constexpr int W = V::W;
  static_assert(PW % W == 0, "panels hold whole vectors");
  const int64_t npanel = (nk + PW - 1) / PW;
  for (int64_t pn = 0; pn < npanel; ++pn) {
    T* panel = kp + pn * E * PW;
    for (int c0 = 0; c0 < PW; c0 += W) {
      int64_t e_done = 0;  // elements [0, e_done) of keys c0 .. c0 + W - 1 are packed
      if constexpr (V::kHasTranspose) {
        if (pn * PW + c0 + W <= nk) {
          const S* k0 = k + (pn * PW + c0) * k_row;
          // The same elements of the next W keys are fetched meanwhile (this
          // is the first read of K: it streams from memory or L3).
          const bool next = pn * PW + c0 + 2 * W <= nk;
          typename V::R vscale{};  // int8: the W keys' scales (a panel row holds one element of each)
          if constexpr (std::is_same_v<S, I8>) vscale = V::load(kscale + pn * PW + c0);
          for (; e_done + W <= E; e_done += W) {
            typename V::R r[W];
            if (next)
              for (int i = 0; i < W; ++i) __builtin_prefetch(k0 + (W + i) * k_row + e_done);
            for (int i = 0; i < W; ++i) r[i] = load_as<V>(k0 + i * k_row + e_done);
            V::transpose(r);
            if constexpr (std::is_same_v<S, I8>)
              for (int i = 0; i < W; ++i) r[i] = V::mul(r[i], vscale);
            for (int i = 0; i < W; ++i) V::store(panel + (e_done + i) * PW + c0, r[i]);
          }
        }
      }
      for (int c = c0; c < c0 + W; ++c) {
        const int64_t j = pn * PW + c;
        if (j < nk) {
          const S* krow = k + j * k_row;
          if constexpr (std::is_same_v<S, I8>) {
            const T ks = kscale[j];
            for (int64_t e = e_done; e < E; ++e) panel[e * PW + c] = to_float(krow[e]) * ks;
          } else {
            for (int64_t e = e_done; e < E; ++e) panel[e * PW + c] = static_cast<T>(to_float(krow[e]));
          }
        } else {
          for (int64_t e = e_done; e < E; ++e) panel[e * PW + c] = T(0);
        }
      }
    }
  }
}

