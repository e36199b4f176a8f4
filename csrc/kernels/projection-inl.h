// The dense projection y = x @ w (+ bias) (pyattn/projection.h) with the
// score tiles of sdpa-inl.h: a work item is kProjectRows rows x
// kProjectChunk columns, items chunk by chunk; a thread packs a chunk's
// columns of w into panels of PW = NR*W columns (D rows of PW, zero beyond
// A) when its item is of another chunk than the last, and multiplies MR
// rows of x at a time into a register tile. Included INSIDE a target namespace after
// sdpa-inl.h; no include guard.
template <class V, class Shape>
void project_kernel(const ProjectParams& p, WorkItems& work, void* scratch) {
  using T = typename V::T;
  constexpr int MR = Shape::qk_mr, NR = Shape::qk_nr;
  constexpr int64_t PW = NR * V::W;
  static_assert(kProjectChunk % PW == 0 && kProjectRows % MR == 0, "work items of whole tiles");
  const int64_t D = p.D, A = p.A;
  T* panels = static_cast<T*>(scratch);    // the chunk's panels: kProjectChunk / PW of D x PW
  T* tile = panels + D * kProjectChunk;   // MR x PW: a last, partial panel's products
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.w);
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  const int64_t row_blocks = (p.rows + kProjectRows - 1) / kProjectRows;
  int64_t packed = -1;  // the chunk whose panels are in scratch (items go chunk by chunk)
  for (int64_t item = work.next(); item >= 0; item = work.next()) {
    const int64_t chunk = item / row_blocks, r0 = item % row_blocks * kProjectRows;
    const int64_t nr = imin(kProjectRows, p.rows - r0);
    const int64_t chunk0 = chunk * kProjectChunk, chunk_end = imin(chunk0 + kProjectChunk, A);
    if (chunk != packed) {
      for (int64_t c0 = chunk0; c0 < chunk_end; c0 += PW) {
        const int64_t nc = imin(PW, A - c0);
        T* panel = panels + (c0 - chunk0) / PW * D * PW;
        for (int64_t e = 0; e < D; ++e) {
          T* dst = panel + e * PW;
          const T* src = w + e * A + c0;
          for (int64_t c = 0; c < nc; ++c) dst[c] = src[c];
          for (int64_t c = nc; c < PW; ++c) dst[c] = T(0);
        }
      }
      packed = chunk;
    }
    for (int64_t c0 = chunk0; c0 < chunk_end; c0 += PW) {
      const int64_t nc = imin(PW, A - c0);
      const T* panel = panels + (c0 - chunk0) / PW * D * PW;
      const bool whole = nc == PW;
      for (int64_t m0 = 0; m0 < nr; m0 += MR) {
        const int mr = static_cast<int>(imin(MR, nr - m0));
        T* yr = y + (r0 + m0) * A + c0;
        qk_rows<V, MR, NR>(mr, x + (r0 + m0) * p.x_stride, p.x_stride, panel, D, whole ? yr : tile,
                           whole ? A : PW);
        for (int m = 0; m < mr; ++m) {
          T* row = yr + m * A;
          if (!whole)
            for (int64_t c = 0; c < nc; ++c) row[c] = tile[m * PW + c];
          if (bias)
            for (int64_t c = 0; c < nc; ++c) row[c] += bias[c0 + c];
        }
      }
    }
  }
}
