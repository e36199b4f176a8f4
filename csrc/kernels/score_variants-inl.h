// Score epilogues: the steps the shared loop's strip step (score_strip-inl.h)
// applies to each row of a strip's score tile, chosen at compile time by the
// kernel's Variant (kernel_switch.h), so a call without them pays nothing
// per score. Included INSIDE a target namespace after vec_math-inl.h and
// before the loop's parts (attention_loop-inl.h); no include guard.
//
// A new epilogue: its step here (in transform or add_bias, under its
// Variant constant), its bit at the switch (kernel_switch.h), its field in
// ScoreVariants and its row in the table of score options
// (pyattn/score_options.h: the argument rule, read by the bindings), its
// keyword in pyattn/attention.py, its reference (pyattn/reference.py).
//
// The loop makes a score in this order:
//   s = the scorer's score (scale <q, k> for SDPA)
//   transform(s)           softcap: s = c tanh(s / c)           (Gemma 2)
//   + the float mask       (the strip step; the mask's rule: add_bias_rule)
//   add_bias(s)            ALiBi: s += -slope |p(i) - j|         (BLOOM, MPT)
//   then it hides the keys outside the row's visible interval (so a hidden
//   key stays -inf whatever an epilogue made of it) and runs the softmax.
// The sink is not an epilogue but a term of the row's denominator, added
// when the row is finished (row_finish.h).
//
// Units: scores may be kept in log2 units (s log2 e: attention_loop-inl.h).
// Softcap is defined on the natural score; in log2 units it becomes
//   c' tanh(s' / c')  with s' = s log2 e, c' = c log2 e,
// which is log2 e times c tanh(s / c) exactly (the tanh argument s' / c' is
// the natural s / c); ALiBi's slope is likewise taken times log2 e.
//
// Numerics: softcap takes vtanh<V, kRecip = true> (vec_math-inl.h: <= 2.1
// ulp, a reciprocal instead of a division) of s times 1/c' (one rounding),
// then one product: the capped score is within ~4 ulp of c tanh(s / c)
// relative to itself (float32: ~5e-7 |s|). A row whose |s / c'| are all
// below 1 (typical: Gemma 2's c = 50) takes vtanh's |x| < 1 branch alone,
// which gives the same bits without its exponential. ALiBi adds
// fma(|p - j|, -slope', s), the distance exact while below 2^24 (float32).

template <class V, class Var>
struct ScoreEpilogue {
  using T = typename V::T;
  using R = typename V::R;
  static constexpr int W = V::W;

  T cap = T(0), inv_cap = T(0);  // softcap c' and 1 / c' in score units
  T unit = T(1);                  // score units per natural unit
  const AttentionParams& p;
  const T* slopes = nullptr;      // of the current batch element
  T iota[W];                      // 0, 1, ..., W - 1

  ScoreEpilogue(const AttentionParams& params, bool log2) : p(params) {
    const double u = log2 ? kLog2e : 1.0;
    unit = static_cast<T>(u);
    if constexpr (Var::kSoftcap) {
      cap = static_cast<T>(p.variants.softcap * u);
      inv_cap = static_cast<T>(1.0 / (p.variants.softcap * u));
    }
    for (int i = 0; i < W; ++i) iota[i] = T(i);
  }

  PYATTN_INLINE void begin_item(int64_t b) {
    if constexpr (Var::kAlibi) {
      const StridedArray& a = p.variants.alibi_slopes;
      slopes = static_cast<const T*>(a.data) + a.batch_offset(p.batch, b);
    }
  }

  // Before the float mask: scores s[0, ncols) (ncols a multiple of W).
  PYATTN_INLINE void transform(T* s, int64_t ncols) const {
    if constexpr (Var::kSoftcap) {
      const R vc = V::set1(cap), vi = V::set1(inv_cap);
      R amax = V::zero();  // max |x| of the row (NaN: the full vtanh)
      for (int64_t c = 0; c < ncols; c += W) amax = V::max(amax, V::abs(V::mul(V::load(s + c), vi)));
      const T xmax = V::reduce_max(amax);
      if (xmax < T(1)) {
        for (int64_t c = 0; c < ncols; c += W)
          V::store(s + c, V::mul(vc, vtanh_small<V, true>(V::mul(V::load(s + c), vi))));
      } else {
        for (int64_t c = 0; c < ncols; c += W)
          V::store(s + c, V::mul(vc, vtanh<V, true>(V::mul(V::load(s + c), vi))));
      }
    }
  }

  // After the float mask: scores s[0, ncols) of keys j0, j0 + 1, ... for
  // folded row r of the batch element, whose key position is pos.
  PYATTN_INLINE void add_bias(T* s, int64_t ncols, int64_t r, int64_t pos, int64_t j0) const {
    if constexpr (Var::kAlibi) {
      const T slope = slopes[(r / p.L) * p.variants.alibi_slopes.fold_stride];
      // -slope in score units; a slope whose product with log2 e overflows
      // stays the largest finite value (at distance 0 the bias stays 0).
      T ns = -slope * unit;
      const T big = std::numeric_limits<T>::max();
      if (!(ns <= big)) ns = big;
      if (!(ns >= -big)) ns = -big;
      // p - j per lane, in four independent chains (one would wait on the
      // latency of each subtraction).
      const R vns = V::set1(ns), step = V::set1(T(4 * W));
      R d0 = V::sub(V::set1(static_cast<T>(pos - j0)), V::load(iota));
      R d1 = V::sub(d0, V::set1(T(W))), d2 = V::sub(d0, V::set1(T(2 * W))), d3 = V::sub(d0, V::set1(T(3 * W)));
      int64_t c = 0;
      for (; c + 4 * W <= ncols; c += 4 * W) {
        V::store(s + c, V::fma(V::abs(d0), vns, V::load(s + c)));
        V::store(s + c + W, V::fma(V::abs(d1), vns, V::load(s + c + W)));
        V::store(s + c + 2 * W, V::fma(V::abs(d2), vns, V::load(s + c + 2 * W)));
        V::store(s + c + 3 * W, V::fma(V::abs(d3), vns, V::load(s + c + 3 * W)));
        d0 = V::sub(d0, step);
        d1 = V::sub(d1, step);
        d2 = V::sub(d2, step);
        d3 = V::sub(d3, step);
      }
      for (; c < ncols; c += W) {
        V::store(s + c, V::fma(V::abs(d0), vns, V::load(s + c)));
        d0 = V::sub(d0, V::set1(T(W)));
      }
    }
  }
};
