// A dense layer. Every projection of the decoder (and the LM head) goes through this
// class, so the weight format is decided in this one place:
//  - bfloat16 weights are packed once at load time for the AVX-512 BF16 kernel
//    (kernels/cpu/packed_gemm.h) when the CPU has it: decode then streams the weights at
//    memory speed instead of oneDNN reordering them on every call;
//  - weight-only int8 (quantization "int8") stores one int8 per weight and a float scale per
//    output channel, halving the bytes a decode step reads; on a CPU without AVX-512 BF16
//    it runs ATen's weight-only int8 kernel (at::_weight_int8pack_mm) instead;
//  - anything else runs at::linear on the weight as given.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "cpu/packed_gemm.h"

namespace nanovllm {

enum class Quantization { kNone, kInt8 };

// kAuto: the packed-weight kernel where the CPU has it, ATen otherwise. kATen: ATen alone,
// what a CPU without AVX-512 BF16 runs (tests choose it to check that path anywhere).
enum class LinearImpl { kAuto, kATen };

class Linear {
 public:
  Linear() = default;
  // weight: [out_features, in_features], contiguous, in the model's dtype; bias:
  // [out_features] or undefined.
  Linear(const at::Tensor& weight, const at::Tensor& bias, Quantization quantization = Quantization::kNone,
         LinearImpl impl = LinearImpl::kAuto);

  // x: [tokens, in_features] in the model's dtype -> [tokens, out_features], same dtype.
  at::Tensor operator()(const at::Tensor& x) const;

  // The same product into out: [tokens, out_features], contiguous, in the model's dtype or
  // float32. Packed weights write float32 straight from the kernel's float32 sums, so
  // logits keep that precision (bfloat16 would round logits near 20 to steps of 0.125).
  void operator()(const at::Tensor& x, const at::Tensor& out) const;

  // out[i] = row indices[i] of the weight: the embedding lookup of a model whose LM head
  // is its embedding table. out: [indices.numel(), in_features], contiguous.
  void rows(const at::Tensor& out, const at::Tensor& indices) const;

  int64_t out_features() const { return out_features_; }

 private:

  int64_t out_features_ = 0;
  at::Tensor weight_;                   // at::linear's operand, or int8 [out, in] for ATen's int8 kernel
  at::Tensor int8_scales_;              // [out] in the model's dtype, with an ATen int8 weight_
  kernels::cpu::PackedWeight packed_;  // packed_.data is defined when packed
  at::Tensor bias_;                     // float32 when packed
};

}  // namespace nanovllm
