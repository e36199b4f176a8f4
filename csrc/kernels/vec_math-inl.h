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
