// The online softmax of the attention loop: the running state of a work
// item's rows (max m, sum l, accumulator acc) and the step that folds one
// key block's scores into it. Included INSIDE a target namespace after
// kernel_common-inl.h and vec_math-inl.h; no include guard.
//
// Per row and key block (scores s, hidden entries -inf):
//   m' = max(m, rowmax s),  P = exp(s - m') (2^ in log2 units),
//   l = l e^(m - m') + sum P,  acc = acc e^(m - m') (P V is added after).

// The state of a work item's rows r = 0 .. rows - 1 (scratch): m[r], l[r],
// and acc row r (ev_pad values at acc + r * ev_pad).
template <class T>
struct RowState {
  T* m;
  T* l;
  T* acc;
  int64_t ev_pad;

  // Every row as before its first key: m = -inf, l = 0, acc = 0.
  PYATTN_INLINE void reset(int64_t rows) const {
    for (int64_t r = 0; r < rows; ++r) {
      m[r] = neg_inf<T>();
      l[r] = T(0);
      for (int64_t c = 0; c < ev_pad; ++c) acc[r * ev_pad + c] = T(0);
    }
  }
};

// One online-softmax step for one row: turns scores s[0, ncols) (ncols a
// multiple of W, hidden entries -inf) into probabilities in place and returns
// the max they are relative to. Updates m, l and rescales the acc row.
template <class V, bool kLog2>
inline typename V::T softmax_step(typename V::T* s, int64_t ncols, typename V::T* m,
                                  typename V::T* l, typename V::T* acc_row, int64_t ev_pad) {
  using T = typename V::T;
  using R = typename V::R;
  // Four running maxima: one would chain every vector on the latency of
  // max (3% of the whole call at L = 1024, E = 64).
  R mx0 = V::set1(neg_inf<T>()), mx1 = mx0, mx2 = mx0, mx3 = mx0;
  int64_t c = 0;
  for (; c + 4 * V::W <= ncols; c += 4 * V::W) {
    mx0 = V::max(mx0, V::load(s + c));
    mx1 = V::max(mx1, V::load(s + c + V::W));
    mx2 = V::max(mx2, V::load(s + c + 2 * V::W));
    mx3 = V::max(mx3, V::load(s + c + 3 * V::W));
  }
  for (; c < ncols; c += V::W) mx0 = V::max(mx0, V::load(s + c));
  const T block_max = V::reduce_max(V::max(V::max(mx0, mx1), V::max(mx2, mx3)));
  const T m_old = *m;
  const T m_new = block_max > m_old ? block_max : m_old;
  // Subtract 0 instead of -inf while nothing is visible: exp(-inf) = 0.
  const T m_use = m_new == neg_inf<T>() ? T(0) : m_new;
  const R vm = V::set1(m_use);
  const R vlog2e = V::set1(static_cast<T>(kLog2e));
  R vsum = V::zero();
  for (c = 0; c < ncols; c += V::W) {
    const R x = V::sub(V::load(s + c), vm);
    // x <= 0 (s <= m_use) unless the row holds a NaN score, whose output
    // is NaN whatever 2^x gives: vexp2 may skip its upper clamp. Natural
    // units take e^x as 2^(x log2 e) too (5 operations cheaper than vexp).
    const R e = vexp2<V, true>(kLog2 ? x : V::mul(x, vlog2e));
    V::store(s + c, e);
    vsum = V::add(vsum, e);
  }
  // (No libm call when the max is unchanged, the common case.)
  const T alpha = m_old == m_use ? T(1) : kLog2 ? std::exp2(m_old - m_use) : std::exp(m_old - m_use);
  if (alpha != T(1)) {
    const R va = V::set1(alpha);
    for (int64_t c = 0; c < ev_pad; c += V::W)
      V::store(acc_row + c, V::mul(V::load(acc_row + c), va));
  }
  *l = *l * alpha + V::reduce_sum(vsum);
  *m = m_new;
  return m_use;
}

