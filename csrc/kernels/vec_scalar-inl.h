// Portable one-lane "vector": the generic target's implementation of the thin
// Vec layer every kernel is written against. Included INSIDE a target
// namespace (no include guard); vec_avx2-inl.h documents the same operations.
//
// Plain C++ on purpose: the generic target must run on any x86-64 (or other)
// CPU, and the compiler may still auto-vectorise it with baseline SSE2.

template <class TT>
struct ScalarVec {
  using T = TT;
  using R = TT;
  static constexpr int W = 1;
  static constexpr bool kHasTranspose = false;
  static constexpr bool kHasBf16Pairs = false;

  static R zero() { return T(0); }
  static R set1(T x) { return x; }
  static R load(const T* p) { return *p; }
  // The first n < W elements, zeros above (never called here: W = 1).
  static R load_tail(const T* p, int n) { return n > 0 ? *p : T(0); }
  static void store(T* p, R x) { *p = x; }
  // (Portable: an ordinary store; see vec_avx2-inl.h.)
  static void store_nt(T* p, R x) { *p = x; }
  static void stores_done() {}
  static R add(R a, R b) { return a + b; }
  static R sub(R a, R b) { return a - b; }
  static R mul(R a, R b) { return a * b; }
  static R fma(R a, R b, R c) { return a * b + c; }
  static R fms(R a, R b, R c) { return a * b - c; }
  // x86 max/min semantics: the SECOND operand is returned when either is NaN,
  // so max(running, x) and min(limit, x) let a NaN x through.
  static R max(R a, R b) { return a > b ? a : b; }
  static R min(R a, R b) { return a < b ? a : b; }
  static T reduce_max(R a) { return a; }
  static T reduce_sum(R a) { return a; }
  static void reduce_sum4(R a0, R a1, R a2, R a3, T* out) {
    out[0] = reduce_sum(a0);
    out[1] = reduce_sum(a1);
    out[2] = reduce_sum(a2);
    out[3] = reduce_sum(a3);
  }
  // Round to nearest integer (ties to even), as a floating value.
  static R round(R x) { return std::nearbyint(x); }
  static void split_round(R x, R* n, R* f) {
    *n = round(x);
    *f = x - *n;
  }
  // 2^n for integral n within the normal exponent range of T.
  static R mul_pow2(R y, R n) { return y * pow2n(n); }
  static R pow2n(R n) {
    if constexpr (sizeof(T) == 4) {
      const uint32_t bits = uint32_t(int32_t(n) + 127) << 23;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    } else {
      const uint64_t bits = uint64_t(int64_t(n) + 1023) << 52;
      double d;
      std::memcpy(&d, &bits, 8);
      return d;
    }
  }
  // One bfloat16 / float16 element (bits) as T.
  static R load_bf16(const uint16_t* p) { return static_cast<T>(to_float(Bf16{*p})); }
  static R load_f16(const uint16_t* p) { return static_cast<T>(to_float(F16{*p})); }
  static R load_i8(const int8_t* p) { return static_cast<T>(*p); }
  // s where the mask byte m[0] is non-zero, else -inf (W bytes of a bool mask).
  static R hide_where_zero(const uint8_t* m, R s) {
    return m[0] ? s : -std::numeric_limits<T>::infinity();
  }
  // (pow2n is only reached with x >= threshold, so n is in range: a NaN x
  // returns x, a smaller one 0.)
  static R mul_pow2_zero_below(R y, R n, R x, R threshold) {
    if (!(x >= threshold)) return x < threshold ? T(0) : x;
    return mul_pow2(y, n);
  }
  // (x < threshold) ? a : b  -- b for NaN x.
  static R select_less(R x, R threshold, R a, R b) { return x < threshold ? a : b; }
  static R div(R a, R b) { return a / b; }
  // 1/x (exact here; the SIMD Vecs may refine an estimate: see vec_avx2-inl.h).
  static R recip(R x) { return T(1) / x; }
  static R abs(R x) { return std::fabs(x); }
  // |mag| with the sign of sgn.
  static R copysign(R mag, R sgn) { return std::copysign(mag, sgn); }
};
