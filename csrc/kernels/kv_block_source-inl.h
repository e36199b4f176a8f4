// The key/value block source of the attention loop: key block -> the rows of
// its keys (for the scorer) and of its values (for P V), with their int8
// scales. Included INSIDE a target namespace after kernel_common-inl.h; no
// include guard.
//
// Interface (what the loop calls; a paged cache or packed variable-length
// sequences would implement the same, each block's rows being contiguous
// with one row stride):
//   begin_item(b, rows)   batch element b, read by `rows` query rows;
//   keys(j0)              KeyRows of the block starting at key j0;
//   values(j0, nk)        ValueRows of keys [j0, j0 + nk), once per block.
// KVBlockSource is the contiguous case: keys and values are strided arrays
// over the batch, in their storage types SK and SV.

// Keys of one block: key j at rows + j * ld, in the storage type SK; int8
// codes: key j's scale at scale[j] (else null).
template <class SK>
struct KeyRows {
  const SK* rows;
  int64_t ld;
  const float* scale;
};

// Values of one block for P V: read in place (in_place non-null, row stride
// ld, storage SV) or converted to T (`converted`, row stride ev_pad, columns
// [Ev, ev_pad) zero). finite: no inf/NaN among them; if not, `converted`
// holds them and P V skips zero probabilities (pv_skip_zeros). int8 values:
// scale[j] is value j's scale, scale_finite whether all of them are.
// check_by_acc: values in place whose finiteness P V's results tell
// (pv_strip; `converted` is then free scratch).
template <class T, class SV>
struct ValueRows {
  const SV* in_place;
  int64_t ld;
  T* converted;
  bool finite;
  const float* scale;
  bool scale_finite;
  bool check_by_acc;
};

// True if rows [0, nk) x columns [0, Ev) of b are all finite: x - x is 0
// for finite x and NaN for inf/NaN, so the sum stays 0 only if all are.
template <class V, class SB>
inline bool all_finite(const SB* b, int64_t ldb, int64_t nk, int64_t Ev) {
  using T = typename V::T;
  typename V::R vs = V::zero();
  T ss = T(0);
  constexpr int64_t kAhead = 8;  // rows fetched ahead (first read of V in decoding)
  for (int64_t j = 0; j < nk; ++j) {
    const SB* row = b + j * ldb;
    if (j + kAhead < nk) prefetch_bytes(reinterpret_cast<const char*>(row + kAhead * ldb), Ev * int64_t(sizeof(SB)));
    int64_t c = 0;
    for (; c + V::W <= Ev; c += V::W) {
      const typename V::R x = load_as<V>(row + c);
      vs = V::add(vs, V::sub(x, x));
    }
    for (; c < Ev; ++c) {
      const T x = static_cast<T>(to_float(row[c]));
      ss += x - x;
    }
  }
  return V::reduce_sum(vs) + ss == T(0);
}


// Keys `keys` (with int8 scales `key_scale`, null otherwise) and the values
// p.v (int8: scales p.v_scale) of an attention op, in the storage types SK
// and SV (T, or bfloat16 / float16 / int8 codes for T = float).
//
// Values whose rows are whole vectors are read in place, else converted into
// scratch (t.off_v). Rows that are not vector-aligned (NumPy aligns to 16
// bytes) are converted too when many strips read them: split loads cost P V
// more than packing the block once does (AVX-512, L = 1024, E = 64: 5-6% of
// the call); with a few rows (decoding) the copy costs more than it saves
// (GQA decoding 20% slower packed). bfloat16 / float16 values are widened as
// P V reads them when few rows do (decoding: converting into scratch first
// halved the rate K and V stream at); many rows share one converted copy.
// "Few" is fewer than `few_rows` rows (the loop: 4 strips). Values read in
// place by an item of one strip (at most `strip` rows, one tile, no more
// rows than keys per block) are checked for inf/NaN by P V's results
// (pv_strip) instead of a pass of their own.
template <class V, class SK, class SV>
struct KVBlockSource {
  using T = typename V::T;
  static constexpr int64_t kVecBytes = V::W * int64_t(sizeof(T));

  const AttentionParams& p;
  const StridedArray& k_arr;
  const StridedArray* k_scale;  // int8 keys: their scales
  T* vp;                        // converted values of the current block
  int64_t Ev, ev_pad, few_rows, strip, q_block, k_block;
  bool v_cols_whole, v_stride_whole;
  bool check_by_acc = false;    // the current item's (see above)
  // The current batch element:
  const SK* k = nullptr;
  const float* ks = nullptr;
  const SV* v = nullptr;
  const float* vscale = nullptr;
  bool v_in_place = false;

  KVBlockSource(const AttentionParams& params, const StridedArray& keys, const StridedArray* key_scale,
                const Tiling& t, T* scratch, int64_t strip_rows)
      : p(params), k_arr(keys), k_scale(key_scale), vp(scratch + t.off_v), Ev(params.Ev),
        ev_pad(t.ev_pad), few_rows(4 * strip_rows), strip(strip_rows), q_block(t.q_block), k_block(t.k_block) {
    v_cols_whole = Ev % V::W == 0 && ev_pad == Ev;
    v_stride_whole = p.v.row_stride * int64_t(sizeof(T)) % kVecBytes == 0;
  }

  PYATTN_INLINE void begin_item(int64_t b, int64_t rows) {
    k = static_cast<const SK*>(k_arr.data) + k_arr.batch_offset(p.batch, b);
    if constexpr (std::is_same_v<SK, I8>)
      ks = static_cast<const float*>(k_scale->data) + k_scale->batch_offset(p.batch, b);
    v = static_cast<const SV*>(p.v.data) + p.v.batch_offset(p.batch, b);
    if constexpr (std::is_same_v<SV, I8>)
      vscale = static_cast<const float*>(p.v_scale.data) + p.v_scale.batch_offset(p.batch, b);
    const bool few = rows < few_rows;
    v_in_place = std::is_same_v<SV, T>
        ? v_cols_whole && v_stride_whole && (reinterpret_cast<uintptr_t>(v) % kVecBytes == 0 || few)
        : v_cols_whole && few;
    check_by_acc = !std::is_same_v<SV, I8> && rows <= q_block && rows <= strip && rows <= k_block;
  }

  PYATTN_INLINE KeyRows<SK> keys(int64_t j0) const {
    const float* scale = nullptr;
    if constexpr (std::is_same_v<SK, I8>) scale = ks + j0;
    return {k + j0 * k_arr.row_stride, k_arr.row_stride, scale};
  }

  PYATTN_INLINE ValueRows<T, SV> values(int64_t j0, int64_t nk) {
    const int64_t ld = p.v.row_stride;
    ValueRows<T, SV> r{v_in_place ? v + j0 * ld : nullptr, ld, vp, true, nullptr, true, check_by_acc};
    if constexpr (std::is_same_v<SV, I8>) {  // int8 codes are finite; their scales may not be
      r.scale = vscale + j0;
      r.scale_finite = all_finite<V>(vscale + j0, nk, 1, nk);  // (one row of nk scales)
      if (!r.in_place) convert_rows<V>(v + j0 * ld, ld, nk, Ev, vp, ev_pad);
    } else if (r.in_place && check_by_acc) {
      r.finite = true;  // until P V's results say otherwise (pv_strip)
    } else if (r.in_place) {
      r.finite = all_finite<V>(r.in_place, ld, nk, Ev);
      if (!r.finite) {  // rare: pv_skip_zeros reads a converted copy
        convert_rows<V>(r.in_place, ld, nk, Ev, vp, ev_pad);
        r.in_place = nullptr;
      }
    } else {
      convert_rows<V>(v + j0 * ld, ld, nk, Ev, vp, ev_pad);
      r.finite = all_finite<V>(vp, ev_pad, nk, Ev);
    }
    return r;
  }
};
