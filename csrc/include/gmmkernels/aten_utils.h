// ATen helpers shared by the host code of every op family (csrc/cpu/<op>.cpp and csrc/cuda/<op>.cpp; not for .cu
// files): how optional arguments and outputs are passed, and the layout of data shared by a batch.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace gmmkernels {

// An output computed only on request: allocated with `sizes`, or the [0] tensor the op returns in its place.
inline at::Tensor optional_output(bool requested, at::IntArrayRef sizes, const at::TensorOptions& options) {
  return requested ? at::empty(sizes, options) : at::empty({0}, options);
}

// An optional tensor argument made contiguous; undefined when it is not given.
inline at::Tensor optional_contiguous(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->contiguous() : at::Tensor();
}

// The data of an optional argument (see optional_contiguous), or nullptr when it is not given.
template <typename T>
inline const T* optional_data(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// Elements between the batch entries of a contiguous x [B or 1, N, D]: 0 when one data set serves all B.
inline int64_t batch_stride(const at::Tensor& x) { return x.size(0) == 1 ? 0 : x.size(1) * x.size(2); }

}  // namespace gmmkernels
