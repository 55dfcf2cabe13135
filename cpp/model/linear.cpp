#include "linear.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/linear.h>

namespace nanovllm {

Linear::Linear(const at::Tensor& weight, const at::Tensor& bias, Quantization quantization)
    : out_features_(weight.size(0)) {
  if (quantization == Quantization::kInt8) {
    packed_ = kernels::cpu::quantize_int8(weight);
  } else if (weight.scalar_type() == at::kBFloat16 && kernels::cpu::packed_gemm_accelerated()) {
    packed_ = kernels::cpu::pack_bfloat16(weight);
  } else {
    weight_ = weight;
    bias_ = bias;
    return;
  }
  if (bias.defined()) bias_ = bias.to(at::kFloat).contiguous();
}

at::Tensor Linear::operator()(const at::Tensor& x) const {
  if (!packed_.data.defined()) {
    // x·Wᵀ with W kept [out, in]: oneDNN/MKL read the transposed operand natively.
    return bias_.defined() ? at::linear(x, weight_, bias_) : at::linear(x, weight_);
  }
  // The kernel writes bfloat16 or float32; a float16 model takes float32 and rounds.
  const bool direct = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat;
  const at::Tensor out =
      at::empty({x.size(0), out_features_}, x.options().dtype(direct ? x.scalar_type() : at::kFloat));
  (*this)(x, out);
  return direct ? out : out.to(x.scalar_type());
}

void Linear::operator()(const at::Tensor& x, const at::Tensor& out) const {
  if (!packed_.data.defined()) {
    out.copy_((*this)(x));
    return;
  }
  // The kernel takes bfloat16 activations: a float16 or float32 model with int8 weights
  // rounds its activations here, which costs less precision than the int8 weights do.
  const at::Tensor input =
      x.scalar_type() == at::kBFloat16 && x.stride(1) == 1 ? x : x.to(at::kBFloat16).contiguous();
  if (out.scalar_type() == at::kBFloat16 || out.scalar_type() == at::kFloat) {
    kernels::cpu::packed_linear(out, input, packed_, bias_);
  } else {
    out.copy_((*this)(x));
  }
}

void Linear::rows(const at::Tensor& out, const at::Tensor& indices) const {
  if (packed_.data.defined()) {
    kernels::cpu::packed_rows(out, packed_, indices);
  } else {
    at::Tensor target = out;  // index_select_out wants a mutable handle
    at::index_select_out(target, weight_, 0, indices);
  }
}

}  // namespace nanovllm
