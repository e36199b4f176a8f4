// The finalisation of one online-softmax row, shared by the kernels' own
// normalisation (attention_loop-inl.h) and the split-KV merge
// (driver/attention_driver.h), so that a sink is counted the same way, and
// exactly once, on both paths. SIMD-free scalar code.
//
// In: the row's running max m (score units: natural, or log2 if `log2`;
// -inf if nothing was seen) and sum l = sum_j e^(s_j - m) (0 if no key was
// visible). With a sink (natural units; -inf = none), the row's reference
// point becomes top = max(m, sink) and its denominator
//   den = l e^(m - top) + e^(sink - top),
// so out = acc e^(m - top) / den (carry * inv), weight_j = e^(s_j - top) / den,
// lse = top + log den. Without one: top = m, carry = 1, inv = 1/l. A row with
// no visible key: out 0, weights 0 (inv = 0), lse = sink (-inf without one).
// A NaN max propagates (to out, weights and lse). A row without a sink
// (sink = -inf) gets exactly the arithmetic of a plain softmax, so sinks need
// no template constant: this runs once per row, not per score.
#pragma once

#include <cmath>
#include <limits>

#include "pyattn/attention_params.h"

namespace pyattn {

template <class T>
struct RowFinish {
  bool empty;  // no visible key
  T top;       // what the final probabilities are relative to (score units)
  T carry;     // e^(m - top): rescales what was accumulated relative to m
  T inv;       // 1 / den
  T lse;       // natural units
};

// sink: natural units, -inf for none (the argument rules exclude NaN, +inf).
template <class T>
inline RowFinish<T> finish_row(T m, T l, T sink, bool log2) {
  const T ninf = -std::numeric_limits<T>::infinity();
  RowFinish<T> f;
  f.empty = l == T(0);
  if (f.empty) {
    f.top = ninf;
    f.carry = T(0);
    f.inv = T(0);
    f.lse = sink;
    return f;
  }
  const T su = log2 ? sink * static_cast<T>(kLog2e) : sink;
  T den = l;
  f.top = m;
  f.carry = T(1);
  if (su != ninf) {
    if (su > m) f.top = su;  // (a NaN m stays)
    auto ex = [log2](T x) { return log2 ? std::exp2(x) : std::exp(x); };
    if (f.top != m) f.carry = ex(m - f.top);
    den = l * f.carry + ex(su - f.top);
  }
  f.inv = T(1) / den;
  f.lse = (log2 ? f.top * static_cast<T>(kLn2) : f.top) + std::log(den);
  return f;
}

}  // namespace pyattn
