// The floating-point mode the kernels run in: denormal results are flushed
// to zero (x86 MXCSR.FTZ) on each thread while it runs a kernel, and the
// thread's previous mode is restored afterwards.
//
// Why: a denormal result costs a microcode assist of ~100+ cycles on x86.
// The kernels keep their own intermediates clear of that range (vexp2 gives
// exactly 0 below 2^-124), but products and sums of tiny probabilities and
// values can still land there: with ALiBi slopes around 0.1-2, each row's
// keys far from its position have probabilities 2^-100..2^-124, and P V
// through them ran 1.25-1.55x slower than without ALiBi (L = 2048, 1 thread).
// What is flushed is below 1.2e-38 (float32) / 2.2e-308 (float64), far below
// every tolerance; every thread of every call runs in the same mode, so
// results stay bitwise identical for any thread count.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace pyattn {

class FlushDenormals {
 public:
#if defined(__x86_64__) || defined(_M_X64)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8000u); }  // FTZ
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#endif
};

}  // namespace pyattn
