#include "pyattn/batch_layout.h"

#include <cstddef>

namespace pyattn {

void BatchLayoutBuilder::add(StridedArray* target, std::vector<int64_t> strides) {
  targets_.push_back(target);
  strides_.push_back(std::move(strides));
}

int64_t BatchLayoutBuilder::fold_shared(const std::vector<const StridedArray*>& shared) {
  for (size_t d = shape_.size(); d-- > 0;) {
    if (shape_[d] <= 1) continue;
    bool all_broadcast = true, any_varies = false;
    for (size_t o = 0; o < targets_.size(); ++o) {
      bool is_shared = false;
      for (const StridedArray* s : shared) is_shared |= s == targets_[o];
      if (is_shared)
        all_broadcast &= strides_[o][d] == 0;
      else
        any_varies |= strides_[o][d] != 0;
    }
    if (!all_broadcast || !any_varies) continue;
    const int64_t n = shape_[d];
    for (size_t o = 0; o < targets_.size(); ++o) {
      targets_[o]->fold_stride = strides_[o][d];
      strides_[o].erase(strides_[o].begin() + d);
    }
    shape_.erase(shape_.begin() + d);
    return n;
  }
  return 1;
}

bool BatchLayoutBuilder::finish(BatchShape* out) {
  const std::size_t nops = targets_.size();
  std::vector<int64_t> shape;
  std::vector<std::vector<int64_t>> strides(nops);
  int64_t count = 1;
  for (std::size_t d = 0; d < shape_.size(); ++d) {
    count *= shape_[d];
    if (shape_[d] == 1) continue;  // contributes no offset
    const bool mergeable = !shape.empty() && [&] {
      for (std::size_t o = 0; o < nops; ++o)
        if (strides[o].back() != strides_[o][d] * shape_[d]) return false;
      return true;
    }();
    if (mergeable) {
      shape.back() *= shape_[d];
      for (std::size_t o = 0; o < nops; ++o) strides[o].back() = strides_[o][d];
    } else {
      shape.push_back(shape_[d]);
      for (std::size_t o = 0; o < nops; ++o) strides[o].push_back(strides_[o][d]);
    }
  }
  if (count == 0) {  // nothing to compute; keep offsets trivially valid
    shape.assign(1, 0);
    for (auto& s : strides) s.assign(1, 0);
  }
  if (shape.size() > static_cast<std::size_t>(kMaxBatchDims)) return false;
  out->ndim = static_cast<int>(shape.size());
  out->count = count;
  for (std::size_t d = 0; d < shape.size(); ++d) out->shape[d] = shape[d];
  for (std::size_t o = 0; o < nops; ++o)
    for (std::size_t d = 0; d < shape.size(); ++d) targets_[o]->batch_stride[d] = strides[o][d];
  return true;
}

}  // namespace pyattn
