#include "linear.h"

#include <utility>

#include <ATen/ops/linear.h>

namespace nanovllm {

Linear::Linear(at::Tensor weight, at::Tensor bias) : weight_(std::move(weight)), bias_(std::move(bias)) {}

at::Tensor Linear::operator()(const at::Tensor& x) const {
  // x·Wᵀ with W kept [out, in]: oneDNN/MKL read the transposed operand natively (bf16 runs
  // on AVX-512 BF16 / AMX where the CPU has it).
  return bias_.defined() ? at::linear(x, weight_, bias_) : at::linear(x, weight_);
}

}  // namespace nanovllm
