// AVX2 + FMA implementation of the Vec layer (8 floats / 4 doubles per
// register). Included INSIDE the avx2 target namespace, after
// #pragma GCC target("avx2,fma"); no include guard.
//
// The operations every Vec provides (kernels use nothing else):
//   zero set1 load store add sub mul fma(a,b,c)=a*b+c fms(a,b,c)=a*b-c max min
//   reduce_max reduce_sum reduce_sum4(a0..a3, out) round mul_pow2(y, n) = y * 2^n (n integral)
//   split_round(x, &n, &f): n = round(x), f = x - n
//   mul_pow2_zero_below(y, n, x, t) = x < t ? 0 : mul_pow2(y, n) (the latter for NaN x)
//   hide_where_zero(m, s): s where the byte m[i] != 0, else -inf (bool masks)
//   load_bf16 / load_f16 (float Vecs only): W 16-bit elements widened
//   load_i8 (float Vecs only): W int8 codes converted to float (exact)
//   select_less(x,t,a,b) = x < t ? a : b (b for NaN x)   div(a,b) = a / b
//   recip(x) ~ 1/x   abs(x)   copysign(mag,sgn) = |mag| with the sign of sgn
//   load_tail(p, n): p[0, n) for 0 <= n < W, zeros above; reads nothing else
//   kHasTranspose: if true, transpose(r) transposes the W x W block r[0, W)
//   kHasBf16Pairs: if true (float Vecs), load_bf16_pair(p, &even, &odd)
//     widens the 2W bfloat16 elements at p with two ALU operations for the
//     two vectors (load_bf16: two for one): even = elements 0, 2, ..,
//     2W - 2, odd = 1, 3, .., 2W - 1; deinterleave(a, b, &even, &odd) puts
//     the 2W floats a, b in that order and interleave(even, odd, &a, &b)
//     back
// max/min return the SECOND operand when either is NaN (x86 semantics), so
// max(running, x) / min(limit, x) propagate a NaN x.
// recip: float = rcp estimate (12 bits) + one Newton step, within 2 ulp of
// 1/x for 2^-125 < |x| < 2^125 (outside that range use div); double = div.

struct Avx2F32 {
  using T = float;
  using R = __m256;
  static constexpr int W = 8;
  static constexpr bool kHasTranspose = true;
  static constexpr bool kHasBf16Pairs = true;

  // Transposes the 8 x 8 block r[0..7] in place (r[i] lane j <-> r[j] lane i).
  static void transpose(R* r) {
    R t[8], u[8];
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + k], 128-bit half h: rows 4i..4i+3 of column 4h + k.
    for (int i = 0; i < 2; ++i) {
      u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
      u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
      u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    for (int k = 0; k < 4; ++k) {
      r[k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x20);
      r[4 + k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x31);
    }
  }

  static R zero() { return _mm256_setzero_ps(); }
  static R set1(T x) { return _mm256_set1_ps(x); }
  static R load(const T* p) { return _mm256_loadu_ps(p); }
  static R load_tail(const T* p, int n) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes));
  }
  static void store(T* p, R x) { _mm256_storeu_ps(p, x); }
  // Non-temporal store (p aligned to a whole vector): the line goes to
  // memory without being read into the caches; stores_done() orders them.
  static void store_nt(T* p, R x) { _mm256_stream_ps(p, x); }
  static void stores_done() { _mm_sfence(); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R fms(R a, R b, R c) { return _mm256_fmsub_ps(a, b, c); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R min(R a, R b) { return _mm256_min_ps(a, b); }
  static T reduce_max(R a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  static T reduce_sum(R a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }  // out[i] = reduce_sum(a_i), the four reductions sharing their shuffles.
  static void reduce_sum4(R a0, R a1, R a2, R a3, T* out) {
    const __m256 u01 = _mm256_add_ps(_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
    const __m256 u23 = _mm256_add_ps(_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
    const __m256 v = _mm256_add_ps(_mm256_shuffle_ps(u01, u23, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm256_shuffle_ps(u01, u23, _MM_SHUFFLE(3, 2, 3, 2)));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
  }

  static R round(R x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static void split_round(R x, R* n, R* f) {
    *n = round(x);
    *f = sub(x, *n);
  }
  static R mul_pow2(R y, R n) { return mul(y, pow2n(n)); }
  static R pow2n(R n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static R mul_pow2_zero_below(R y, R n, R x, R threshold) {
    return _mm256_andnot_ps(_mm256_cmp_ps(x, threshold, _CMP_LT_OQ), mul_pow2(y, n));
  }
  // W bfloat16 / float16 elements (bits) widened to float (F16C for f16).
  static R load_bf16(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  static R load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  // (a bfloat16 is the high half of its float: element 2i is the low half
  // of 32-bit word i, element 2i + 1 the high half)
  static void load_bf16_pair(const uint16_t* p, R* even, R* odd) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    *even = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    *odd = _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(int(0xffff0000u))));
  }
  static void deinterleave(R a, R b, R* even, R* odd) {
    // within 128-bit lanes: a0 a2 b0 b2 | a4 a6 b4 b6, then the 64-bit quarters reordered
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xd8));
    *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xdd)), 0xd8));
  }
  static void interleave(R even, R odd, R* a, R* b) {
    const R e = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), 0xd8));
    const R o = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(odd), 0xd8));
    *a = _mm256_unpacklo_ps(e, o);  // e0 o0 e1 o1 | e2 o2 e3 o3
    *b = _mm256_unpackhi_ps(e, o);
  }
  static R load_i8(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static R hide_where_zero(const uint8_t* m, R s) {
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(m)));
    const __m256 hidden = _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, _mm256_setzero_si256()));
    return _mm256_blendv_ps(s, _mm256_set1_ps(-std::numeric_limits<float>::infinity()), hidden);
  }
  static R select_less(R x, R threshold, R a, R b) {
    return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, threshold, _CMP_LT_OQ));
  }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R recip(R x) {
    const R r = _mm256_rcp_ps(x);
    return _mm256_fmadd_ps(r, _mm256_fnmadd_ps(x, r, _mm256_set1_ps(1.0f)), r);
  }
  static R abs(R x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }
  static R copysign(R mag, R sgn) {
    const R sign = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(sign, mag), _mm256_and_ps(sign, sgn));
  }
};

struct Avx2F64 {
  using T = double;
  using R = __m256d;
  static constexpr int W = 4;
  static constexpr bool kHasTranspose = false;  // key packing stays scalar
  static constexpr bool kHasBf16Pairs = false;

  static R zero() { return _mm256_setzero_pd(); }
  static R set1(T x) { return _mm256_set1_pd(x); }
  static R load(const T* p) { return _mm256_loadu_pd(p); }
  static R load_tail(const T* p, int n) {
    const __m256i lanes = _mm256_setr_epi64x(0, 1, 2, 3);
    return _mm256_maskload_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), lanes));
  }
  static void store(T* p, R x) { _mm256_storeu_pd(p, x); }
  static void store_nt(T* p, R x) { _mm256_stream_pd(p, x); }
  static void stores_done() { _mm_sfence(); }
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static R sub(R a, R b) { return _mm256_sub_pd(a, b); }
  static R mul(R a, R b) { return _mm256_mul_pd(a, b); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static R fms(R a, R b, R c) { return _mm256_fmsub_pd(a, b, c); }
  static R max(R a, R b) { return _mm256_max_pd(a, b); }
  static R min(R a, R b) { return _mm256_min_pd(a, b); }
  static T reduce_max(R a) {
    __m128d m = _mm_max_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    m = _mm_max_sd(m, _mm_unpackhi_pd(m, m));
    return _mm_cvtsd_f64(m);
  }
  static T reduce_sum(R a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
  }
  static void reduce_sum4(R a0, R a1, R a2, R a3, T* out) {
    out[0] = reduce_sum(a0);
    out[1] = reduce_sum(a1);
    out[2] = reduce_sum(a2);
    out[3] = reduce_sum(a3);
  }
  static R round(R x) { return _mm256_round_pd(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static void split_round(R x, R* n, R* f) {
    *n = round(x);
    *f = sub(x, *n);
  }
  static R mul_pow2(R y, R n) { return mul(y, pow2n(n)); }
  static R pow2n(R n) {
    const __m256i i64 = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n));
    const __m256i e = _mm256_add_epi64(i64, _mm256_set1_epi64x(1023));
    return _mm256_castsi256_pd(_mm256_slli_epi64(e, 52));
  }
  static R mul_pow2_zero_below(R y, R n, R x, R threshold) {
    return _mm256_andnot_pd(_mm256_cmp_pd(x, threshold, _CMP_LT_OQ), mul_pow2(y, n));
  }
  static R hide_where_zero(const uint8_t* m, R s) {
    int32_t four;
    std::memcpy(&four, m, 4);
    const __m256i b = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(four));
    const __m256d hidden = _mm256_castsi256_pd(_mm256_cmpeq_epi64(b, _mm256_setzero_si256()));
    return _mm256_blendv_pd(s, _mm256_set1_pd(-std::numeric_limits<double>::infinity()), hidden);
  }
  static R select_less(R x, R threshold, R a, R b) {
    return _mm256_blendv_pd(b, a, _mm256_cmp_pd(x, threshold, _CMP_LT_OQ));
  }
  static R div(R a, R b) { return _mm256_div_pd(a, b); }
  static R recip(R x) { return _mm256_div_pd(_mm256_set1_pd(1.0), x); }
  static R abs(R x) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), x); }
  static R copysign(R mag, R sgn) {
    const R sign = _mm256_set1_pd(-0.0);
    return _mm256_or_pd(_mm256_andnot_pd(sign, mag), _mm256_and_pd(sign, sgn));
  }
};
