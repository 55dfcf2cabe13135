#include "linear.h"

#include <ATen/ops/_weight_int8pack_mm.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/where.h>

namespace nanovllm {
namespace {

// Columns that round `in_features` up to ATen's int8 block of 32.
int64_t padding(int64_t in_features) { return (32 - in_features % 32) % 32; }

}  // namespace

Linear::Linear(const at::Tensor& weight, const at::Tensor& bias, Quantization quantization, LinearImpl impl)
    : out_features_(weight.size(0)) {
  const bool packed_kernel = impl == LinearImpl::kAuto && kernels::cpu::packed_gemm_accelerated();
  if (quantization == Quantization::kInt8 && !packed_kernel) {
    // The same rounding as kernels::cpu::quantize_int8, in the layout ATen's kernel takes;
    // its scales are in the activations' dtype.
    const at::Tensor w = weight.to(at::kFloat);
    const at::Tensor scale = w.abs().amax(1).div(127.0);
    const at::Tensor divisor = at::where(scale.eq(0), at::ones_like(scale), scale);
    weight_ = w.div(divisor.unsqueeze(1)).round().clamp(-127, 127).to(at::kChar);
    // ATen's kernel reads in_features in blocks of 32 (and crashes on a partial block):
    // zero columns pad it, and the activations are padded to match.
    weight_ = at::constant_pad_nd(weight_, {0, padding(weight_.size(1))}).contiguous();
    int8_scales_ = scale.to(weight.scalar_type());
    bias_ = bias;
    return;
  }
  if (quantization == Quantization::kInt8) {
    packed_ = kernels::cpu::quantize_int8(weight);
  } else if (weight.scalar_type() == at::kBFloat16 && packed_kernel) {
    packed_ = kernels::cpu::pack_bfloat16(weight);
  } else {
    weight_ = weight;
    bias_ = bias;
    return;
  }
  if (bias.defined()) bias_ = bias.to(at::kFloat).contiguous();
}

at::Tensor Linear::operator()(const at::Tensor& x) const {
  if (int8_scales_.defined()) {
    const int64_t pad = weight_.size(1) - x.size(1);
    const at::Tensor input = pad > 0 ? at::constant_pad_nd(x, {0, pad}) : x.contiguous();
    at::Tensor out = at::_weight_int8pack_mm(input, weight_, int8_scales_);
    return bias_.defined() ? out.add_(bias_) : out;
  }
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
    if (!int8_scales_.defined() && out.scalar_type() == x.scalar_type()) {
      // What at::linear runs (addmm with a bias, mm without), straight into out.
      at::Tensor target = out;  // the _out ops want a mutable handle
      if (bias_.defined()) {
        at::addmm_out(target, bias_, x, weight_.t());
      } else {
        at::mm_out(target, x, weight_.t());
      }
      return;
    }
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
  } else if (int8_scales_.defined()) {
    const at::Tensor ids = indices.to(at::kLong);
    out.copy_(weight_.narrow(1, 0, out.size(1)).index_select(0, ids).to(at::kFloat).mul(
        int8_scales_.index_select(0, ids).to(at::kFloat).unsqueeze(1)));
  } else {
    at::Tensor target = out;  // index_select_out wants a mutable handle
    at::index_select_out(target, weight_, 0, indices);
  }
}

}  // namespace nanovllm
