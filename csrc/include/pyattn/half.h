// Storage types read by the kernels (bfloat16, IEEE float16, int8 codes) and
// their exact conversion to float. SIMD-free plain C++; the targets include it
// before switching ISA, so these inline functions are baseline code that the
// ISA kernels inline (the vector loads are Vec::load_bf16 / load_f16).
#pragma once

#include <cstdint>
#include <cstring>

namespace pyattn {

struct Bf16 { uint16_t bits; };
struct F16 { uint16_t bits; };
// A quantised key/value element: the int8 code, without its row's scale
// (the kernels apply the scale: sdpa-inl.h, kv_block_source-inl.h, pv_product-inl.h).
struct I8 { int8_t code; };

inline float to_float(float x) { return x; }
inline double to_float(double x) { return x; }

inline float to_float(I8 x) { return static_cast<float>(x.code); }

inline float to_float(Bf16 x) {
  const uint32_t u = uint32_t(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float to_float(F16 x) {
  const uint32_t sign = uint32_t(x.bits & 0x8000u) << 16;
  const uint32_t exp = (x.bits >> 10) & 0x1fu;
  uint32_t mant = x.bits & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {          // inf / NaN
    u = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {      // normal
    u = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {     // +-0
    u = sign;
  } else {                    // subnormal: normalise
    uint32_t e = 113;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --e;
    }
    u = sign | (e << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace pyattn
