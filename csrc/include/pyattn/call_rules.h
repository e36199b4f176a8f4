// The value rules every entry point applies to a call's options, written
// once: the Python bindings (csrc/bindings/call_args.h, which raise
// TypeError / ValueError) and the C API (csrc/capi/, which returns error
// codes) both use these. The score options' rules are with their table,
// pyattn/score_options.h. SIMD-free, no Python.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace pyattn {

// is_causal's codes (pyattn._core.CAUSAL; the C API's PYATTN_CAUSAL_*).
enum class Causal : int { none = 0, upper_left = 1, lower_right = 2 };

// The scale when none is given: 1/sqrt(E), or 1 for E = 0.
inline double default_scale(int64_t E) { return E > 0 ? 1.0 / std::sqrt(static_cast<double>(E)) : 1.0; }

// A window side (>= 0; negative: unbounded, -1) as the kernels take it: a
// side wider than any distance between a query and a key position is the
// same as unbounded.
inline int64_t window_side(int64_t side, int64_t L, int64_t S) {
  return side < 0 ? -1 : std::min(side, L + S + 1);
}

// Grouped-query heads: Hkv key/value heads serve Hq query heads.
inline bool kv_heads_divide(int64_t hq, int64_t hkv) { return hkv == 0 ? hq == 0 : hq % hkv == 0; }

// A valid key count of a batch element.
inline bool length_in_range(int64_t n, int64_t S) { return 0 <= n && n <= S; }

}  // namespace pyattn
