// Block sizes and scratch layout for the attention kernels (see tiling.h).
#include "tiling.h"

#include <algorithm>
#include <atomic>
#include <limits>

#include "core_limits.h"

namespace pyattn {
namespace {

// Largest scratch for row groups' probabilities, all threads of a call
// together (see below): L = S = 2048 float32 takes 6 MiB per thread (768
// rows), 4096 12 MiB. A testing hook changes it.
std::atomic<int64_t> weights_scratch_limit{kWeightsScratchBytes};

// Adds `n` elements at the end of the layout (64-byte aligned regions);
// returns false on overflow.
bool take(int64_t n, size_t elem_size, int64_t* cursor, int64_t* off) {
  const int64_t align = std::max<int64_t>(1, 64 / static_cast<int64_t>(elem_size));
  const int64_t limit = std::numeric_limits<int64_t>::max() / 8 / static_cast<int64_t>(elem_size);
  if (n < 0 || n > limit || *cursor > limit - n - align) return false;
  *off = *cursor;
  *cursor = round_up(*cursor + n, align);
  return true;
}

bool mul_ok(int64_t a, int64_t b, int64_t* r) {
  return !__builtin_mul_overflow(a, b, r);
}

}  // namespace

int64_t set_weights_scratch_limit(int64_t bytes) { return weights_scratch_limit.exchange(bytes); }

bool make_sdpa_tiling(int64_t batch_count, int64_t L /* rows */, int64_t S, int64_t E,
                      int64_t Ev, size_t elem_size, bool want_weights, bool weights_resident,
                      int threads, Tiling* t) {
  // Score tile height: a multiple of every ISA's register-tile height
  // (4, 6, 12) that keeps the q_block x k_block score tile in L2.
  t->q_block = std::max<int64_t>(1, std::min<int64_t>(L, 96));
  // A small batch with few rows: shorter tiles (still a multiple of 24, so of
  // every register-tile height 4, 6, 8, 12) for ~16 items, or 11 items of 96
  // rows (L = 1024) would leave one of two threads idle for 1/12 of the call.
  if (batch_count * ceil_div(L, t->q_block) < 16 && L > 24)
    t->q_block = std::max<int64_t>(24, round_up(ceil_div(L, ceil_div(16, batch_count)), 24));
  // Row group: up to kMaxTilesPerGroup score tiles share each packed key block, but keep at
  // least ~16 work items when the batch is small so two or more threads
  // stay busy. Key blocks are aligned to multiples of k_block, so a row's
  // arithmetic does not depend on which group it is in.
  const int64_t nqb = ceil_div(L, t->q_block);
  int64_t per_group = std::min<int64_t>(kMaxTilesPerGroup, nqb);
  while (per_group > 1 && batch_count * ceil_div(nqb, per_group) < 16) per_group /= 2;
  // Same-sized groups (11 tiles: 6 + 5, not 8 + 3), so threads finish together.
  per_group = ceil_div(nqb, ceil_div(nqb, per_group));
  t->group_rows = per_group * t->q_block;
  // Key block: as long as the packed K and V panels (<= 512 KiB) stay in L2
  // (>= 1 MiB on every x86 core of the last decade) and a 12-24 row strip
  // of scores in L1: longer blocks mean fewer online-softmax rescales
  // (512 keys measured 4-6% faster than 256 at E = 64, 128 slower still).
  // Decoding (up to 4 rows, which read keys and values in place on AVX2 and
  // AVX-512) takes blocks of up to 2 MiB: each block switches the memory
  // stream from K to V and back, and each switch starts a stream whose first
  // rows no fetch has asked for yet. (The scratch for packed panels this
  // sizes is then address space that is never touched.)
  const int64_t row_bytes = (E + Ev) * static_cast<int64_t>(elem_size);
  const int64_t kb_max = L <= 4 ? 2048 : 512;
  int64_t kb = std::clamp<int64_t>((int64_t(kb_max) << 10) / std::max<int64_t>(row_bytes, 1) / kPadElems * kPadElems,
                                   128, kb_max);
  kb = std::min<int64_t>(kb, round_up(std::max<int64_t>(S, 1), kPadElems));
  t->k_block = kb;
  t->num_groups = ceil_div(L, t->group_rows);
  t->num_k_blocks = ceil_div(S, t->k_block);
  if (!mul_ok(batch_count, t->num_groups, &t->items)) return false;

  // Split-KV when there are few items and many keys (decoding): aim at ~32
  // items with chunks of at least 2048 keys.
  t->num_splits = 1;
  t->split_keys = 0;
  if (!want_weights && t->items > 0 && t->items < 16 && S >= 4096) {
    const int64_t ns = std::min(ceil_div(32, t->items), ceil_div(S, 2048));
    const int64_t chunk = round_up(ceil_div(S, ns), t->k_block);
    if (ceil_div(S, chunk) > 1) {
      t->num_splits = ceil_div(S, chunk);
      t->split_keys = chunk;
      t->items *= t->num_splits;
    }
  }

  t->ev_pad = round_up(std::max<int64_t>(Ev, 1), kPadElems);
  const int64_t kpad = round_up(t->k_block, kPadElems);
  const int64_t qb = t->q_block, gr = t->group_rows;
  int64_t cur = 0, n = 0;
  bool ok = mul_ok(gr, E, &n) && take(n, elem_size, &cur, &t->off_q);
  ok = ok && mul_ok(kpad, std::max<int64_t>(E, 1), &n) && take(n, elem_size, &cur, &t->off_k);
  ok = ok && mul_ok(t->k_block, t->ev_pad, &n) && take(n, elem_size, &cur, &t->off_v);
  ok = ok && mul_ok(qb, kpad, &n) && take(n, elem_size, &cur, &t->off_s);
  ok = ok && mul_ok(gr, t->ev_pad, &n) && take(n, elem_size, &cur, &t->off_acc);
  ok = ok && take(gr, elem_size, &cur, &t->off_m);
  ok = ok && take(gr, elem_size, &cur, &t->off_l);
  // With weights, each block's probabilities wait in scratch until the
  // group's final max and sum are known; the weights array is then written
  // once, in order (L = 2048, 1 thread: 3-7% faster than keeping them in the
  // weights array, which wrote each line, read it back from memory and wrote
  // it again). With one buffer (the same memory for every group, so its lines
  // stay in cache) the group's weights are written at its end, right after
  // the kernel has zeroed each fresh page. Two buffers for results of up to
  // 32 MiB: a group's weights are written (non-temporal stores) a few rows
  // at a time while the thread's next group computes, overlapping its
  // arithmetic instead of stalling the core at the group's end (L = 512,
  // 12 heads: 7% faster). glibc serves results that
  // small from memory it has mapped before, and the bindings reuse a larger
  // one when they can (`weights_resident`, bindings/weights_memory.h; L =
  // 2048: deferred 10% faster). Other results are fresh memory (mmap), whose
  // zeroing by the kernel leaves the lines in cache for the ordinary stores
  // of a burst at the group's end to hit (L = 2048: deferred 1-2% slower than
  // the burst). One buffer if two would take more than the scratch limit for
  // the threads that run at once; the probabilities are kept in the weights
  // array if one would.
  t->ld_wp = 0;
  t->wp_buffers = 1;
  if (ok && want_weights) {
    const int64_t ld = round_up(std::max<int64_t>(S, 1), kPadElems);
    const int64_t running = std::clamp<int64_t>(threads, 1, std::max<int64_t>(t->items, 1));
    const int64_t limit = weights_scratch_limit.load(std::memory_order_relaxed);
    int64_t result = 0, bytes = 0;
    const bool small = mul_ok(batch_count, L, &result) && mul_ok(result, S, &result) &&
                       mul_ok(result, static_cast<int64_t>(elem_size), &result) &&
                       result <= kSmallWeightsBytes;
    for (int64_t bufs = small || weights_resident ? 2 : 1; bufs >= 1 && t->ld_wp == 0; --bufs) {
      if (mul_ok(gr, ld, &n) && mul_ok(n, static_cast<int64_t>(elem_size), &bytes) &&
          mul_ok(bytes, running * bufs, &bytes) && bytes <= limit) {
        t->ld_wp = ld;
        t->wp_buffers = bufs;
      }
    }
  }
  n = 0;
  ok = ok && (!want_weights || (mul_ok(gr, t->num_k_blocks, &n) && mul_ok(n, t->wp_buffers, &n)));
  ok = ok && take(n, elem_size, &cur, &t->off_wmax);
  if (ok && t->ld_wp > 0)
    ok = mul_ok(gr, t->ld_wp, &n) && mul_ok(n, t->wp_buffers, &n) && take(n, elem_size, &cur, &t->off_wp);
  t->scratch_elems = cur;
  return ok;
}

}  // namespace pyattn
