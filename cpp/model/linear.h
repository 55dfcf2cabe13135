// A dense layer. Every projection of the decoder goes through this class, so another
// weight format (e.g. weight-only int8) changes the matmul in this one place.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace nanovllm {

class Linear {
 public:
  Linear() = default;
  // weight: [out_features, in_features], contiguous; bias: [out_features] or undefined.
  Linear(at::Tensor weight, at::Tensor bias);

  // x: [tokens, in_features] -> [tokens, out_features], in the weight's dtype.
  at::Tensor operator()(const at::Tensor& x) const;

  int64_t out_features() const { return weight_.size(0); }

 private:
  at::Tensor weight_;
  at::Tensor bias_;
};

}  // namespace nanovllm
