// Memory for large weights results: the most recently freed one is kept for
// the next call's weights instead of going back to the system.
//
// Why: a weights result of more than ~32 MiB is fresh memory on every call
// (glibc maps it with mmap and unmaps it when the array dies), and the kernel
// zeroes each fresh page before pyattn writes it. For L = S = 2048, 12 heads
// (192 MiB) that zeroing and the page faults cost about as much as computing
// the weights (return_weights took 1.7x the plain call's time instead of
// 1.4x with memory that was mapped before).
//
// Retention is bounded: one buffer (the last weights array of at least
// kMinKeptBytes that the user freed), kept only until the next attention call
// that runs; a call that takes no weights, or weights of a size the buffer
// does not fit, frees it. Weights pyattn only uses on the way (float32
// weights converted to float16 / bfloat16) are not kept.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "../kernels/core_limits.h"

namespace pyattn::bindings {

namespace py = pybind11;

// Weights results smaller than this are ordinary NumPy arrays (glibc reuses
// memory that small by itself).
constexpr int64_t kMinKeptBytes = kMinKeptWeightsBytes;  // (kernels/core_limits.h)

struct WeightsArray {
  py::array array;
  bool resident = false;  // its pages were written before: no page faults, no zeroing
};

// A C-contiguous, writable, uninitialised array of `dtype` (float32 or
// float64) and `shape` (whose byte size the caller checked fits in int64):
// the kept buffer when it fits (at least the bytes needed, at most 1.5x),
// else new memory, kept when the array dies if `keep_when_freed`, else
// released to the system. Frees a kept buffer it does not use.
WeightsArray new_weights_array(const py::dtype& dtype, const std::vector<py::ssize_t>& shape,
                               bool keep_when_freed);

// Frees the kept buffer, if any: called by attention calls that take no weights.
void release_kept_weights();

// Bytes of the kept buffer (0: none). For tests.
int64_t kept_weights_bytes();

}  // namespace pyattn::bindings
