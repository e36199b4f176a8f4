// The driver sequence every attention op shares: tiling, dispatch of the
// selected ISA's kernel, threads, and the merge of split-KV partial results.
// Each op's driver (sdpa_driver.cpp, additive_driver.cpp) only says how wide
// its scorer's per-row / per-key scratch is and which kernel to run.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <new>

#include "pyattn/attention_params.h"
#include "../kernels/row_finish.h"
#include "../kernels/tiling.h"
#include "fp_mode.h"
#include "parallel.h"

namespace pyattn {

// Combines the num_splits partial states (m, l, acc) of every row, in split
// order, into out and lse -- the same algebra as merge_attention_states (m in
// log2 units if `log2`, as the kernels of an op whose scorer keeps them so).
// The parts hold no sink: a row's sink joins its denominator here, once
// (finish_row, as the kernels finish unsplit rows).
template <class T>
void merge_splits(const AttentionParams& p, const Tiling& t, bool log2) {
  const int64_t rows_total = p.fold * p.L, Ev = p.Ev, ns = t.num_splits;
  const T* state = static_cast<const T*>(t.split_state);
  const T ninf = -std::numeric_limits<T>::infinity();
  const StridedArray& sinks = p.variants.sinks;
  for (int64_t b = 0; b < p.batch.count; ++b) {
    T* out = static_cast<T*>(p.out.data) + p.out.batch_offset(p.batch, b);
    T* lse = p.lse.data ? static_cast<T*>(p.lse.data) + p.lse.batch_offset(p.batch, b) : nullptr;
    const T* sink_b = sinks.data ? static_cast<const T*>(sinks.data) + sinks.batch_offset(p.batch, b) : nullptr;
    for (int64_t g = 0; g < t.num_groups; ++g) {
      const int64_t g0 = g * t.group_rows;
      const int64_t item0 = (b * t.num_groups + g) * ns;
      for (int64_t gr = 0; gr < t.group_rows && g0 + gr < rows_total; ++gr) {
        auto part = [&](int64_t s) { return state + ((item0 + s) * t.group_rows + gr) * (Ev + 2); };
        T m = ninf;
        bool any = false;
        for (int64_t s = 0; s < ns; ++s) {
          const T* r = part(s);
          if (r[1] == T(0)) continue;  // no visible key in this chunk
          if (!any || r[0] > m || std::isnan(r[0])) m = r[0];
          any = true;
        }
        T* o = out + p.out.row_offset(g0 + gr, p.L);
        const T sink = sink_b ? sink_b[((g0 + gr) / p.L) * sinks.fold_stride] : ninf;
        if (!any) {
          for (int64_t c = 0; c < Ev; ++c) o[c] = T(0);
          if (lse) lse[p.lse.row_offset(g0 + gr, p.L)] = sink;
          continue;
        }
        T l = T(0);
        for (int64_t c = 0; c < Ev; ++c) o[c] = T(0);
        for (int64_t s = 0; s < ns; ++s) {
          const T* r = part(s);
          if (r[1] == T(0)) continue;
          const T f = log2 ? std::exp2(r[0] - m) : std::exp(r[0] - m);
          l += r[1] * f;
          for (int64_t c = 0; c < Ev; ++c) o[c] += r[2 + c] * f;
        }
        const RowFinish<T> fin = finish_row(m, l, sink, log2);
        const T oscale = fin.carry * fin.inv;  // (= 1 / l without a sink)
        for (int64_t c = 0; c < Ev; ++c) o[c] *= oscale;
        if (lse) lse[p.lse.row_offset(g0 + gr, p.L)] = fin.lse;
      }
    }
  }
}

// Runs `kernel(p, tiling, work, scratch)` (an ISA's kernel for p's op) on
// each thread, which takes work items from `work` until none is left.
// `width` is what the op's scorer needs per query row and per key in the
// tiling's q/k scratch regions (E for dot products);
// `log2_scores`: the op's kernels keep scores (and split states) in log2 units.
template <class Params, class KernelFn>
void run_attention(const Params& p, int64_t width, bool log2_scores, KernelFn kernel) {
  if (p.batch.count == 0 || p.L == 0 || p.fold == 0) return;
  // Ev = 0 with neither weights nor lse asked for: the result is empty and
  // nothing observable depends on the scores.
  if (p.Ev == 0 && !p.weights.data && !p.lse.data) return;
  const size_t elem = p.dtype == DType::f64 ? sizeof(double) : sizeof(float);
  Tiling t;
  if (!make_sdpa_tiling(p.batch.count, p.fold * p.L, p.S, width, p.Ev, elem,
                        p.weights.data != nullptr, p.weights_resident,
                        std::min(p.num_threads, max_team_size()), &t))
    throw std::bad_alloc();
  ScratchPtr split_state;
  if (t.num_splits > 1) {
    split_state = allocate_scratch(static_cast<size_t>(t.group_rows * (p.Ev + 2)) * elem,
                                   static_cast<int>(t.items));
    t.split_state = split_state.get();
  }
  // Causal rows see more keys the later they are: a team takes each batch
  // element's row groups longest first (with L = 2048 in 3 groups, 12 heads,
  // the last item in plain order is ~4% of the call, and could leave the
  // other thread idle). Not with folded rows (GQA: the rows of a group
  // cycle through L once per query head) or key splits (ItemOrder reverses
  // whole items of one split each).
  ItemOrder order;
  order.groups = t.num_groups;
  order.longest_first = p.vis.causal && p.fold == 1 && t.num_splits == 1 && t.num_groups > 1;
  parallel_for_items(t.items, p.num_threads, static_cast<size_t>(t.scratch_elems) * elem, order,
                     [&](WorkItems& work, void* scratch) {
                       FlushDenormals ftz;  // (fp_mode.h)
                       kernel(p, t, work, scratch);
                     });
  if (t.num_splits > 1) {
    if (p.dtype == DType::f64)
      merge_splits<double>(p, t, log2_scores);
    else
      merge_splits<float>(p, t, log2_scores);
  }
}

}  // namespace pyattn
