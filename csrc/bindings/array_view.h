// Reading NumPy arrays into the core's strided views. The Python layer has
// already validated dtypes and shapes; these checks are a last line of
// defence so that a bad call raises instead of reading out of bounds.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "pyattn/batch_layout.h"
#include "pyattn/strided.h"

namespace pyattn::bindings {

namespace py = pybind11;

// Whether the product of `dims` (none negative) times `item` bytes fits in int64.
inline bool addressable(const std::vector<py::ssize_t>& dims, int64_t item) {
  int64_t bytes = item;
  for (py::ssize_t d : dims)
    if (d < 0 || __builtin_mul_overflow(bytes, static_cast<int64_t>(d), &bytes)) return false;
  return true;
}

// Element strides of `a`, checking each byte stride is a whole number of items.
inline std::vector<int64_t> element_strides(const py::array& a, const char* name) {
  const int64_t item = a.itemsize();
  std::vector<int64_t> s(a.ndim());
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    if (a.strides(d) % item != 0)
      throw py::value_error(std::string(name) + ": strides must be multiples of the item size");
    s[d] = a.strides(d) / item;
  }
  return s;
}

// Registers `a` (batch dims first, then `trailing` dims) with the layout
// builder and fills the trailing strides of `view`. Batch dims of size 1 are
// broadcast (stride 0); any other size must equal the call's batch size.
inline void add_operand(BatchLayoutBuilder& builder, const std::vector<int64_t>& batch,
                        const py::array& a, const char* name, int trailing, StridedArray* view,
                        bool writable = false) {
  const size_t nb = batch.size();
  if (static_cast<size_t>(a.ndim()) != nb + trailing)
    throw py::value_error(std::string(name) + ": wrong number of dimensions for this call");
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + " is read-only");
  std::vector<int64_t> s = element_strides(a, name);
  // A size-1 dimension is read at index 0 only (or broadcast): stride 0.
  // An empty array is never read at all.
  for (size_t d = 0; d < s.size(); ++d)
    if (a.shape(d) == 1 || a.size() == 0) s[d] = 0;
  std::vector<int64_t> bs(nb);
  for (size_t d = 0; d < nb; ++d) {
    const int64_t n = a.shape(d);
    if (n != batch[d] && n != 1)
      throw py::value_error(std::string(name) + ": batch shape does not broadcast");
    bs[d] = s[d];
  }
  view->data = const_cast<void*>(a.data());
  view->row_stride = trailing >= 1 ? s[nb] : 0;
  view->col_stride = trailing >= 2 ? s[nb + 1] : 1;
  builder.add(view, std::move(bs));
}

// dtype equivalence, not object identity: an array from pickle or with
// dtype metadata carries its own (equal) dtype object.
inline bool same_dtype(const py::dtype& a, const py::dtype& b) {
  return a.is(b) || py::detail::npy_api::get().PyArray_EquivTypes_(a.ptr(), b.ptr());
}

template <class T>
inline bool has_dtype(const py::array& a) {
  return same_dtype(a.dtype(), py::dtype::of<T>());
}

}  // namespace pyattn::bindings
