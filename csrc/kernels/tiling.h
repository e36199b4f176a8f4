// Tiling heuristics for every attention kernel: block sizes as a function of
// L, S, E, Ev and the cache sizes, and the layout of the per-thread scratch
// space. The one place where block-size literals live.
//
// SIMD-free and ISA-independent on purpose: the driver (baseline code) fills
// a Tiling once per call and every ISA's kernel reads the same numbers, so the
// arithmetic order -- hence the result -- does not depend on the thread count.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pyattn {

// Columns of packed key panels and value rows are padded to this many
// elements: a multiple of every ISA's panel width (16 float lanes x 2).
constexpr int64_t kPadElems = 32;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }

// A work item is a "row group" of up to group_rows query rows of one batch
// element. Key blocks are aligned to multiples of k_block; each is packed
// once per row group and used by all its q_block-row blocks, so packing costs
// (E + Ev) / group_rows per score instead of per q_block.
struct Tiling {
  int64_t q_block = 1;       // query rows scored together (score tile height)
  int64_t group_rows = 1;    // query rows per work item (multiple of q_block)
  int64_t k_block = 1;       // keys per block (multiple of kPadElems)
  int64_t num_groups = 0;    // ceil(L / group_rows)
  int64_t num_k_blocks = 0;  // ceil(S / k_block)
  int64_t items = 0;         // batch.count * num_groups * num_splits

  // Split-KV (decoding: few rows, many keys, few items): each item sees only
  // keys [split * split_keys, (split + 1) * split_keys) and leaves its
  // partial state (m, l, acc: group_rows x (Ev + 2)) in split_state for the
  // driver to merge in split order. Chosen from the sizes alone, never from
  // the thread count, so results stay bitwise identical for any num_threads.
  int64_t num_splits = 1;
  int64_t split_keys = 0;    // multiple of k_block
  void* split_state = nullptr;

  // Per-thread scratch layout, offsets in elements of the compute type.
  int64_t off_q = 0;         // group_rows x E       scaled queries
  int64_t off_k = 0;         // k_block_pad x E      packed key panels
  int64_t off_v = 0;         // k_block x Ev_pad     packed value rows
  int64_t off_s = 0;         // q_block x k_block_pad  scores / probabilities
  int64_t off_acc = 0;       // group_rows x Ev_pad  output accumulator
  int64_t off_m = 0;         // group_rows           running max
  int64_t off_l = 0;         // group_rows           running sum
  int64_t off_wmax = 0;      // wp_buffers x group_rows x num_k_blocks  (only with weights)
  int64_t off_wp = 0;        // wp_buffers x group_rows x ld_wp  probabilities (only with weights)
  int64_t ld_wp = 0;         // 0: probabilities are kept in the weights array itself
  int64_t wp_buffers = 1;    // 2: a group's weights are written while the next one computes
  int64_t scratch_elems = 0; // total per thread
  int64_t ev_pad = 0;
};

// Register-tile shapes of one ISA's kernels (each target picks its own for
// its register file): score tile of QK_MR rows x QK_NR vectors, P V tile of
// PV_MR rows x PV_NC vectors; the attention loop takes query rows in strips
// of STRIP rows (a multiple of both heights). Pure constants, safe outside
// target regions.
template <int QK_MR, int QK_NR, int PV_MR, int PV_NC, int STRIP>
struct TileShape {
  static constexpr int qk_mr = QK_MR, qk_nr = QK_NR, pv_mr = PV_MR, pv_nc = PV_NC, strip = STRIP;
  static_assert(STRIP % QK_MR == 0 && STRIP % PV_MR == 0, "strip: whole register tiles");
};

// Testing hook: the largest scratch for row groups' probabilities when
// weights are asked for, shared by the threads of a call (beyond it they are
// kept in the weights array itself). Returns the previous limit.
int64_t set_weights_scratch_limit(int64_t bytes);

// Returns false if the sizes overflow what can be allocated.
// `rows` = query rows per batch element (fold * L); `threads`: how many
// threads may run the items and `weights_resident`: whether the weights
// array's pages are mapped already (both only choose how the weights are
// buffered, which never changes a result's bits).
bool make_sdpa_tiling(int64_t batch_count, int64_t rows, int64_t S, int64_t E,
                      int64_t Ev, size_t elem_size, bool want_weights, bool weights_resident,
                      int threads,
                      Tiling* out);

}  // namespace pyattn
