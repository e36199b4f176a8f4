// AVX-512 (F, DQ, BW, VL: x86-64 "v4") implementation of the Vec layer:
// 16 floats / 8 doubles per register, 32 registers. Included INSIDE the
// avx512 target namespace, after its target pragma; no include guard.
// Operations and NaN semantics as documented in vec_avx2-inl.h; recip is an
// rcp14 estimate refined by Newton steps (one for float, two for double),
// within 2 ulp of 1/x for 2^-125 < |x| < 2^125 (float) / 2^-1021 < |x| < 2^1021.

struct Avx512F32 {
  using T = float;
  using R = __m512;
  static constexpr int W = 16;
  static constexpr bool kHasTranspose = true;
  static constexpr bool kHasBf16Pairs = true;

  // Transposes the 16 x 16 block r[0..15] in place (r[i] lane j <-> r[j]
  // lane i): 2 unpack stages within 128-bit lanes, then 2 stages of lane
  // shuffles; 64 shuffles for 256 elements.
  static void transpose(R* r) {
    R t[16], u[16];
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + k], lane l: rows 4i..4i+3 of column 4l + k.
    for (int i = 0; i < 4; ++i) {
      const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
      const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
      u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
      u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
      u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
      u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int k = 0; k < 4; ++k) {
      t[k] = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x88);
      t[4 + k] = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xdd);
      t[8 + k] = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x88);
      t[12 + k] = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xdd);
    }
    for (int k = 0; k < 4; ++k) {
      r[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88);
      r[8 + k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0xdd);
      r[4 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0x88);
      r[12 + k] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0xdd);
    }
  }

  static R zero() { return _mm512_setzero_ps(); }
  static R set1(T x) { return _mm512_set1_ps(x); }
  static R load(const T* p) { return _mm512_loadu_ps(p); }
  static R load_tail(const T* p, int n) { return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p); }
  static void store(T* p, R x) { _mm512_storeu_ps(p, x); }
  // Non-temporal store (p aligned to a whole vector): the line goes to
  // memory without being read into the caches; stores_done() orders them.
  static void store_nt(T* p, R x) { _mm512_stream_ps(p, x); }
  static void stores_done() { _mm_sfence(); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R fms(R a, R b, R c) { return _mm512_fmsub_ps(a, b, c); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static R min(R a, R b) { return _mm512_min_ps(a, b); }
  static T reduce_max(R a) {
    __m256 m = _mm256_max_ps(_mm512_castps512_ps256(a),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
  }
  static T reduce_sum(R a) {
    __m256 s = _mm256_add_ps(_mm512_castps512_ps256(a),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
  }  // out[i] = reduce_sum(a_i), the four reductions sharing their shuffles.
  static void reduce_sum4(R a0, R a1, R a2, R a3, T* out) {
    const __m512 u01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    const __m512 u23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    // Per 128-bit lane: partial sums of a0, a1, a2, a3.
    const __m512 v = _mm512_add_ps(_mm512_shuffle_ps(u01, u23, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_ps(u01, u23, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
  }

  static R round(R x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // n = round(x), f = x - n: vreduceps gives f directly (cheaper than
  // vrndscaleps, 2 uops on port 0), and n = x - f is exact.
  static void split_round(R x, R* n, R* f) {
    *f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEAREST_INT);
    *n = _mm512_sub_ps(x, *f);
  }
  // y * 2^n in one instruction (vscalefps).
  static R mul_pow2(R y, R n) { return _mm512_scalef_ps(y, n); }
  // The zeroing folded into vscalefps.
  static R mul_pow2_zero_below(R y, R n, R x, R threshold) {
    return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x, threshold, _CMP_NLT_UQ), y, n);
  }
  static R load_bf16(const uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  static R load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void load_bf16_pair(const uint16_t* p, R* even, R* odd) {
    const __m512i w = _mm512_loadu_si512(p);
    *even = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    *odd = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(int(0xffff0000u))));
  }
  static void deinterleave(R a, R b, R* even, R* odd) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    *even = _mm512_permutex2var_ps(a, ie, b);
    *odd = _mm512_permutex2var_ps(a, _mm512_add_epi32(ie, _mm512_set1_epi32(1)), b);
  }
  static void interleave(R even, R odd, R* a, R* b) {
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    *a = _mm512_permutex2var_ps(even, lo, odd);
    *b = _mm512_permutex2var_ps(even, _mm512_add_epi32(lo, _mm512_set1_epi32(8)), odd);
  }
  static R load_i8(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static R hide_where_zero(const uint8_t* m, R s) {
    const __mmask16 keep = _mm_test_epi8_mask(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m)),
                                              _mm_set1_epi8(-1));
    return _mm512_mask_mov_ps(_mm512_set1_ps(-std::numeric_limits<float>::infinity()), keep, s);
  }
  static R select_less(R x, R threshold, R a, R b) {
    return _mm512_mask_mov_ps(b, _mm512_cmp_ps_mask(x, threshold, _CMP_LT_OQ), a);
  }
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  // rcp14 estimate + one Newton step.
  static R recip(R x) {
    const R r = _mm512_rcp14_ps(x);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(x, r, _mm512_set1_ps(1.0f)), r);
  }
  static R abs(R x) { return _mm512_abs_ps(x); }
  static R copysign(R mag, R sgn) {
    // (mag & ~sign) | (sgn & sign): ternary logic 0xCA = A ? B : C with A = the sign mask.
    const __m512i sign = _mm512_set1_epi32(int32_t(0x80000000u));
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(sign, _mm512_castps_si512(sgn),
                                                         _mm512_castps_si512(mag), 0xCA));
  }
};

struct Avx512F64 {
  using T = double;
  using R = __m512d;
  static constexpr int W = 8;
  static constexpr bool kHasTranspose = false;  // key packing stays scalar
  static constexpr bool kHasBf16Pairs = false;

  static R zero() { return _mm512_setzero_pd(); }
  static R set1(T x) { return _mm512_set1_pd(x); }
  static R load(const T* p) { return _mm512_loadu_pd(p); }
  static R load_tail(const T* p, int n) { return _mm512_maskz_loadu_pd(__mmask8((1u << n) - 1), p); }
  static void store(T* p, R x) { _mm512_storeu_pd(p, x); }
  static void store_nt(T* p, R x) { _mm512_stream_pd(p, x); }
  static void stores_done() { _mm_sfence(); }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static R sub(R a, R b) { return _mm512_sub_pd(a, b); }
  static R mul(R a, R b) { return _mm512_mul_pd(a, b); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static R fms(R a, R b, R c) { return _mm512_fmsub_pd(a, b, c); }
  static R max(R a, R b) { return _mm512_max_pd(a, b); }
  static R min(R a, R b) { return _mm512_min_pd(a, b); }
  static T reduce_max(R a) {
    __m256d m = _mm256_max_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
    __m128d h = _mm_max_pd(_mm256_castpd256_pd128(m), _mm256_extractf128_pd(m, 1));
    h = _mm_max_sd(h, _mm_unpackhi_pd(h, h));
    return _mm_cvtsd_f64(h);
  }
  static T reduce_sum(R a) {
    __m256d s = _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    h = _mm_add_sd(h, _mm_unpackhi_pd(h, h));
    return _mm_cvtsd_f64(h);
  }
  static void reduce_sum4(R a0, R a1, R a2, R a3, T* out) {
    out[0] = reduce_sum(a0);
    out[1] = reduce_sum(a1);
    out[2] = reduce_sum(a2);
    out[3] = reduce_sum(a3);
  }
  static R round(R x) { return _mm512_roundscale_pd(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static void split_round(R x, R* n, R* f) {
    *f = _mm512_reduce_pd(x, _MM_FROUND_TO_NEAREST_INT);
    *n = _mm512_sub_pd(x, *f);
  }
  static R mul_pow2(R y, R n) { return _mm512_scalef_pd(y, n); }
  static R mul_pow2_zero_below(R y, R n, R x, R threshold) {
    return _mm512_maskz_scalef_pd(_mm512_cmp_pd_mask(x, threshold, _CMP_NLT_UQ), y, n);
  }
  static R hide_where_zero(const uint8_t* m, R s) {
    const __mmask16 keep = _mm_test_epi8_mask(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(m)),
                                              _mm_set1_epi8(-1));
    return _mm512_mask_mov_pd(_mm512_set1_pd(-std::numeric_limits<double>::infinity()),
                              static_cast<__mmask8>(keep), s);
  }
  static R select_less(R x, R threshold, R a, R b) {
    return _mm512_mask_mov_pd(b, _mm512_cmp_pd_mask(x, threshold, _CMP_LT_OQ), a);
  }
  static R div(R a, R b) { return _mm512_div_pd(a, b); }
  // rcp14 estimate + two Newton steps.
  static R recip(R x) {
    const R one = _mm512_set1_pd(1.0);
    R r = _mm512_rcp14_pd(x);
    r = _mm512_fmadd_pd(r, _mm512_fnmadd_pd(x, r, one), r);
    return _mm512_fmadd_pd(r, _mm512_fnmadd_pd(x, r, one), r);
  }
  static R abs(R x) { return _mm512_abs_pd(x); }
  static R copysign(R mag, R sgn) {
    const __m512i sign = _mm512_set1_epi64(int64_t(0x8000000000000000ull));
    return _mm512_castsi512_pd(_mm512_ternarylogic_epi64(sign, _mm512_castpd_si512(sgn),
                                                         _mm512_castpd_si512(mag), 0xCA));
  }
};
