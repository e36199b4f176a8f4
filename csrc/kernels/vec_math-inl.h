// Vectorised elementary functions written once over the Vec layer.
// Included INSIDE a target namespace after the Vec definitions; no guard.
//
// vexp: Cody-Waite range reduction x = n*ln2 + r, |r| <= ln2/2, then
//   float : Cephes' degree-7 minimax polynomial for e^r,
//   double: Taylor series of e^r to degree 13 (truncation error < 5e-18),
// scaled by 2^n built directly in the exponent field. Measured error bound
// (tests/test_vec_math.py sweeps it): <= 2 ulp for float and double over the
// normal range. Inputs below -86 (float) / -707 (double) return exactly 0:
// results stay clear of the denormal range, whose arithmetic costs ~100x on
// x86 (masked scores are -inf, and exp(-inf) must be fast), and softmax
// weights that small are 0 to every tolerance we promise;
// NaN returns NaN; -inf returns 0.
//
// vtanh: x - x y C(y)/Q(y) (y = x^2, a Pade approximant with integer
// coefficients) for |x| < 1, 1 - 2/(e + 1) with e = vexp(2|x|) above, sign
// restored (details at vtanh below). Measured maximum error against tanhl
// (every 3rd float in [2^-30, 10] and its negative; 1.4e7 random doubles in
// [-21, 21] and down to 2^-40): float 1.15 ulp with the AVX2 and AVX-512
// Vecs, 1.22 ulp with the scalar one (max abs 7.3e-8); double 1.07 ulp (max
// abs 1.2e-16); worst near |x| = 0.93-1. Documented bound: 1.25 ulp.
// tanh(+-inf) = +-1, tanh(-0) = -0, NaN returns NaN.

// e^r for double |r| <= ln2 / 2: 1 + r + r^2 p(r), p the Taylor series with
// 1/k! for k = 13 .. 2 (truncation error < 5e-18).
template <class V>
inline typename V::R exp_taylor13(typename V::R r) {
  using T = typename V::T;
  typename V::R p = V::set1(T(1.6059043836821613e-10));
  p = V::fma(p, r, V::set1(T(2.08767569878681e-09)));
  p = V::fma(p, r, V::set1(T(2.505210838544172e-08)));
  p = V::fma(p, r, V::set1(T(2.755731922398589e-07)));
  p = V::fma(p, r, V::set1(T(2.7557319223985893e-06)));
  p = V::fma(p, r, V::set1(T(2.48015873015873e-05)));
  p = V::fma(p, r, V::set1(T(0.0001984126984126984)));
  p = V::fma(p, r, V::set1(T(0.001388888888888889)));
  p = V::fma(p, r, V::set1(T(0.008333333333333333)));
  p = V::fma(p, r, V::set1(T(0.041666666666666664)));
  p = V::fma(p, r, V::set1(T(0.16666666666666666)));
  p = V::fma(p, r, V::set1(T(0.5)));
  return V::add(V::fma(V::mul(p, r), r, r), V::set1(T(1)));
}

template <class V>
inline typename V::R vexp(typename V::R x) {
  using T = typename V::T;
  constexpr bool f32 = sizeof(T) == 4;
  const auto hi = V::set1(f32 ? T(88.3762626647949) : T(709.436139303));
  const auto lo = V::set1(f32 ? T(-86.0) : T(-707.0));
  const auto log2e = V::set1(T(1.44269504088896341));
  const auto c1 = V::set1(f32 ? T(-0.693359375) : T(-6.93145751953125E-1));
  const auto c2 = V::set1(f32 ? T(2.12194440e-4) : T(-1.42860682030941723212E-6));

  const auto xin = x;
  x = V::max(lo, V::min(hi, x));  // x second: NaN passes through
  const auto n = V::round(V::mul(x, log2e));
  auto r = V::fma(n, c1, x);
  r = V::fma(n, c2, r);
  if constexpr (!f32) {
    return V::mul_pow2_zero_below(exp_taylor13<V>(r), n, xin, lo);
  } else {
    // Cephes' polynomial: e^r = 1 + r + r^2 * p(r)
    auto p = V::set1(T(1.9875691500E-4));
    p = V::fma(p, r, V::set1(T(1.3981999507E-3)));
    p = V::fma(p, r, V::set1(T(8.3334519073E-3)));
    p = V::fma(p, r, V::set1(T(4.1665795894E-2)));
    p = V::fma(p, r, V::set1(T(1.6666665459E-1)));
    p = V::fma(p, r, V::set1(T(5.0000001201E-1)));
    const auto y = V::add(V::fma(V::mul(p, r), r, r), V::set1(T(1)));
    return V::mul_pow2_zero_below(y, n, xin, lo);
  }
}

// vexp2: 2^x, the softmax's exponential for scores kept in log2 units (the
// dot-product scorer folds log2 e into the query scale, attention_loop-inl.h):
// x = n + f with n = round(x), f = x - n exact (|f| <= 1/2), then
//   float : a degree-6 minimax polynomial for 2^f (relative error 1.9e-9,
//           fitted for this file; 0.93 ulp after float rounding),
//   double: e^r, r = f ln 2, by the Taylor series of vexp (above),
// times 2^n: no Cody-Waite reduction, so fewer operations than vexp. Inputs below -124 (float) / -1020 (double), i.e. about e^-86 /
// e^-707, return exactly 0 as in vexp; NaN returns NaN; -inf returns 0.
// Inputs above 127 / 1023 are clamped there (2^127 / 2^1023, not inf): the
// kernels only take 2^x of x <= 0. Error bound <= 2 ulp (tests/test_vec_math.py).
// kNonPositive: the caller guarantees x <= 0 or NaN (the softmax's x - max),
// so the clamp at the top (which only turns +inf into +inf) is skipped.
template <class V, bool kNonPositive = false>
inline typename V::R vexp2(typename V::R x) {
  using T = typename V::T;
  constexpr bool f32 = sizeof(T) == 4;
  const auto lo = V::set1(f32 ? T(-124.0) : T(-1020.0));
  // No clamp from below: for x < lo (-inf included) n and f may be anything
  // (f = NaN for -inf), the result is zeroed by mul_pow2_zero_below.
  const auto xc = kNonPositive ? x : V::min(V::set1(f32 ? T(127.0) : T(1023.0)), x);  // NaN passes
  typename V::R n, f;
  V::split_round(xc, &n, &f);
  typename V::R y;
  if constexpr (f32) {
    y = V::set1(T(0.0001534581242594868));
    y = V::fma(y, f, V::set1(T(0.0013399930903688073)));
    y = V::fma(y, f, V::set1(T(0.009618489071726799)));
    y = V::fma(y, f, V::set1(T(0.05550328642129898)));
    y = V::fma(y, f, V::set1(T(0.24022646248340607)));
    y = V::fma(y, f, V::set1(T(0.6931471824645996)));
    y = V::fma(y, f, V::set1(T(1)));
  } else {
    y = exp_taylor13<V>(V::mul(f, V::set1(T(0.6931471805599453))));
  }
  return V::mul_pow2_zero_below(y, n, x, lo);
}

// vtanh: tanh x = c - n / d, one division for both branches, then x's sign:
//   |x| < 1: c = x, n / d = x y C(y) / Q(y) with y = x^2, where P/Q is the
//     Pade approximant x P(y) / Q(y) of Lambert's continued fraction
//     tanh x = x / (1 + y / (3 + y / (5 + ...))) cut at depth 5 (float) or 9
//     (double), and C = (Q - P) / y. Every coefficient is a positive integer
//     (exact in T, no cancellation); the subtracted term is at most 0.31 of
//     the result, so its rounding errors shrink by that much. Truncation
//     error at |x| = 1: 4.3e-10 (float), 6.4e-20 (double), relative.
//   |x| >= 1: c = 1, n / d = 2 / (e + 1) with e = vexp(2 min(|x|, hi)); hi
//     is where tanh rounds to 1 in T (9.1 float, 19.1 double), so inf gives
//     +-1. The subtracted term is at most 0.31 of the result here too.
// NaN returns NaN; tanh(-0) = -0. Measured error (<= 1.25 ulp): top of this file.
// The |x| < 1 branch of vtanh alone: bitwise vtanh's result for such x (a
// caller that knows every lane is below 1 skips the exponential).
// kRecip: n * recip(d) instead of n / d (see vtanh).
template <class V, bool kRecip = false>
inline typename V::R vtanh_small(typename V::R x) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr bool f32 = sizeof(T) == 4;
  const R y = V::mul(x, x);
  R c, q;  // C(y), Q(y)
  if constexpr (f32) {
    c = V::fma(V::add(y, V::set1(T(189))), y, V::set1(T(3465)));
    q = V::fma(V::add(y, V::set1(T(210))), y, V::set1(T(4725)));
    q = V::fma(q, y, V::set1(T(10395)));
  } else {
    c = V::fma(V::add(y, V::set1(T(1430))), y, V::set1(T(289575)));
    c = V::fma(c, y, V::set1(T(16081065)));
    c = V::fma(c, y, V::set1(T(218243025)));
    q = V::fma(V::add(y, V::set1(T(1485))), y, V::set1(T(315315)));
    q = V::fma(q, y, V::set1(T(18918900)));
    q = V::fma(q, y, V::set1(T(310134825)));
    q = V::fma(q, y, V::set1(T(654729075)));
  }
  const R num = V::mul(V::mul(x, y), c);
  const R t = kRecip ? V::mul(num, V::recip(q)) : V::div(num, q);
  return V::copysign(V::sub(x, t), x);
}

// kRecip: the quotient as n * recip(d) (the Vec's reciprocal, within 2 ulp:
// an rcp estimate and a Newton step for float on AVX2 / AVX-512, exact
// elsewhere) instead of a division, whose unit takes ~10 cycles per vector.
// The quotient is at most 0.31 of the result, so its extra 2.5 ulp add at
// most 0.8 ulp: <= 2.1 ulp in all (derived from the 1.25 ulp measured for
// kRecip = false; softcap uses it, score_variants-inl.h).
template <class V, bool kRecip = false>
inline typename V::R vtanh(typename V::R x) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr bool f32 = sizeof(T) == 4;
  const R one = V::set1(T(1));
  const R ax = V::abs(x);
  const R y = V::mul(x, x);
  R c, q;  // C(y), Q(y)
  if constexpr (f32) {
    c = V::fma(V::add(y, V::set1(T(189))), y, V::set1(T(3465)));
    q = V::fma(V::add(y, V::set1(T(210))), y, V::set1(T(4725)));
    q = V::fma(q, y, V::set1(T(10395)));
  } else {
    c = V::fma(V::add(y, V::set1(T(1430))), y, V::set1(T(289575)));
    c = V::fma(c, y, V::set1(T(16081065)));
    c = V::fma(c, y, V::set1(T(218243025)));
    q = V::fma(V::add(y, V::set1(T(1485))), y, V::set1(T(315315)));
    q = V::fma(q, y, V::set1(T(18918900)));
    q = V::fma(q, y, V::set1(T(310134825)));
    q = V::fma(q, y, V::set1(T(654729075)));
  }
  // x second: a NaN |x| passes through min.
  const R h = V::min(V::set1(f32 ? T(9.1) : T(19.1)), ax);
  const R e = vexp<V>(V::add(h, h));
  const R threshold = one;
  const R base = V::select_less(ax, threshold, x, one);
  const R num = V::select_less(ax, threshold, V::mul(V::mul(x, y), c), V::set1(T(2)));
  const R den = V::select_less(ax, threshold, q, V::add(e, one));
  const R t = kRecip ? V::mul(num, V::recip(den)) : V::div(num, den);
  return V::copysign(V::sub(base, t), x);
}
