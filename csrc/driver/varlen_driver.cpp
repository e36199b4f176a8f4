// Packed variable-length batches (varlen.h): every sequence's work items in
// one parallel region.
//
// Each sequence n gets the tiling scaled_dot_product_attention would give it
// alone (batch = kv heads, fold * L_n rows, S_n keys), so its arithmetic --
// hence its bits -- are those of that call, and a decoding-shaped sequence
// (few rows, many keys) takes the split-KV path by itself. The items of all
// sequences are numbered one after the other, sequences with the costliest
// items first (threads take items in that order, so the call does not end
// on one long item while the other threads idle), and handed out in tasks
// (several small items of one sequence, or one item); a thread maps each
// task it takes to (sequence, its items) and runs the ISA's kernel on them
// with the sequence's tiling. Split sequences are merged after the region.
#include "pyattn/varlen.h"

#include <algorithm>
#include <cstddef>
#include <new>
#include <vector>

#include "../dispatch/kernel_table.h"
#include "attention_driver.h"

namespace pyattn {
namespace {

size_t storage_size(DType d) {
  switch (d) {
    case DType::f64: return sizeof(double);
    case DType::bf16:
    case DType::f16: return 2;
    default: return sizeof(float);
  }
}

void* advance(void* base, int64_t elems, size_t elem_size) {
  return base ? static_cast<char*>(base) + elems * static_cast<int64_t>(elem_size) : nullptr;
}

// Items are handed out in tasks of several items of one sequence when its
// items are small, so that the set-up of a kernel call (its scorer, its item
// loop) and the task lookup are spread over at least this much work (rows x
// keys); with one call per item they are a good part of a batch of sequences
// of a few tokens.
constexpr double kTaskWork = 8192;

// One sequence that has work: its tiling and where its tasks start.
struct SeqPlan {
  int64_t seq = 0;
  int64_t first_task = 0;
  int64_t per_task = 1;      // items per task (the last task may have fewer)
  double item_cost = 0;      // rows x keys of one item (the order and the tasks only)
  int64_t split_offset = 0;  // of its partial states in the shared buffer (elements)
  Tiling tiling;
};

// `p` (a copy of vp.seq) pointed at sequence n.
void point_at(SdpaParams& p, const VarlenParams& vp, int64_t n) {
  const SdpaParams& base = vp.seq;
  const int64_t q0 = vp.cu_q[n], k0 = vp.cu_k[n];
  const size_t st = storage_size(base.storage), ct = storage_size(base.dtype);
  p.L = vp.cu_q[n + 1] - q0;
  p.S = vp.cu_k[n + 1] - k0;
  p.q.data = advance(base.q.data, q0 * base.q.row_stride, st);
  p.k.data = advance(base.k.data, k0 * base.k.row_stride, st);
  p.v.data = advance(base.v.data, k0 * base.v.row_stride, st);
  p.out.data = advance(base.out.data, q0 * base.out.row_stride, ct);
  p.lse.data = advance(base.lse.data, q0 * base.lse.row_stride, ct);
}

bool add_ok(int64_t a, int64_t b, int64_t* r) { return !__builtin_add_overflow(a, b, r); }
bool mul_ok(int64_t a, int64_t b, int64_t* r) { return !__builtin_mul_overflow(a, b, r); }

}  // namespace

void varlen_attention(const VarlenParams& vp) {
  const SdpaParams& base = vp.seq;
  if (vp.num_seqs <= 0 || base.batch.count == 0 || base.fold == 0) return;
  // Ev = 0 without lse: the result is empty (as in run_attention).
  if (base.Ev == 0 && !base.lse.data) return;
  const size_t elem = storage_size(base.dtype);

  std::vector<SeqPlan> plans;
  int64_t scratch_elems = 0, split_elems = 0;
  for (int64_t n = 0; n < vp.num_seqs; ++n) {
    const int64_t L = vp.cu_q[n + 1] - vp.cu_q[n], S = vp.cu_k[n + 1] - vp.cu_k[n];
    if (L == 0) continue;
    SeqPlan plan;
    plan.seq = n;
    Tiling& t = plan.tiling;
    int64_t rows = 0;
    if (!mul_ok(base.fold, L, &rows) ||
        !make_sdpa_tiling(base.batch.count, rows, S, base.E, base.Ev, elem, false, false,
                          base.num_threads, &t))
      throw std::bad_alloc();
    if (t.items == 0) continue;
    scratch_elems = std::max(scratch_elems, t.scratch_elems);
    if (t.num_splits > 1) {  // this sequence's partial states, in one buffer for all
      int64_t n_state = 0;
      if (!mul_ok(t.items, t.group_rows * (base.Ev + 2), &n_state) ||
          !add_ok(split_elems, n_state, &split_elems))
        throw std::bad_alloc();
      plan.split_offset = split_elems - n_state;
    }
    plan.item_cost = static_cast<double>(std::min(t.group_rows, rows)) *
                     static_cast<double>(t.num_splits > 1 ? t.split_keys : S + 1);
    plan.per_task = std::clamp<int64_t>(static_cast<int64_t>(kTaskWork / plan.item_cost), 1, t.items);
    plans.push_back(plan);
  }
  if (plans.empty()) return;
  std::stable_sort(plans.begin(), plans.end(),
                   [](const SeqPlan& a, const SeqPlan& b) { return a.item_cost > b.item_cost; });
  std::vector<int64_t> first(plans.size());  // first task of each plan, for the lookup
  int64_t tasks = 0;
  for (size_t i = 0; i < plans.size(); ++i) {
    plans[i].first_task = first[i] = tasks;
    if (!add_ok(tasks, ceil_div(plans[i].tiling.items, plans[i].per_task), &tasks)) throw std::bad_alloc();
  }
  ScratchPtr split_state;
  if (split_elems > 0) {
    int64_t bytes = 0;
    if (!mul_ok(split_elems, static_cast<int64_t>(elem), &bytes)) throw std::bad_alloc();
    split_state = allocate_scratch(static_cast<size_t>(bytes), 1);
    for (SeqPlan& plan : plans)
      if (plan.tiling.num_splits > 1)
        plan.tiling.split_state = split_state.get() + static_cast<size_t>(plan.split_offset) * elem;
  }

  const SdpaKernelFn kernel = active_kernels().sdpa[static_cast<int>(base.storage)];
  int64_t scratch_bytes = 0;
  if (!mul_ok(scratch_elems, static_cast<int64_t>(elem), &scratch_bytes)) throw std::bad_alloc();
  // Each thread takes tasks (the "items" of parallel_for_items) until none is left.
  parallel_for_items(tasks, base.num_threads, static_cast<size_t>(scratch_bytes), ItemOrder{},
                     [&](WorkItems& work, void* scratch) {
    SdpaParams p = base;  // this thread's view of its current sequence
    size_t cur = plans.size();
    for (int64_t task = work.next(); task >= 0; task = work.next()) {
      const size_t i = static_cast<size_t>(std::upper_bound(first.begin(), first.end(), task) - first.begin()) - 1;
      const SeqPlan& plan = plans[i];
      if (i != cur) {
        point_at(p, vp, plan.seq);
        cur = i;
      }
      // Within a sequence, causal row groups longest first, as run_attention
      // orders them (see there).
      const Tiling& t = plan.tiling;
      ItemOrder order;
      order.groups = t.num_groups;
      order.longest_first = p.vis.causal && p.fold == 1 && t.num_splits == 1 && t.num_groups > 1;
      const int64_t begin = (task - plan.first_task) * plan.per_task;
      WorkItems some = WorkItems::range(begin, std::min(begin + plan.per_task, t.items), order);
      kernel(p, t, some, scratch);
    }
  });

  SdpaParams p = base;
  for (const SeqPlan& plan : plans) {
    if (plan.tiling.num_splits <= 1) continue;
    point_at(p, vp, plan.seq);
    if (p.dtype == DType::f64)
      merge_splits<double>(p, plan.tiling, scores_in_log2(p));
    else
      merge_splits<float>(p, plan.tiling, scores_in_log2(p));
  }
}

}  // namespace pyattn
