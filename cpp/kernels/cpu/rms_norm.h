// RMSNorm on the CPU, with the residual add fused in (one pass over the hidden state
// instead of three ATen ops per norm).
#pragma once

#include <ATen/core/Tensor.h>

namespace nanovllm::kernels::cpu {

// out = weight * x / sqrt(mean(x²) + eps) over the last dimension, computed in float32.
// x and out: [rows, dim] or [tokens, heads, dim] (heads contiguous; the token stride may be
// anything, e.g. a view of a fused QKV); out may be x itself. weight: [dim].
void rms_norm(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps);

// residual += x, then x = rms_norm(residual): the pre-norm decoder's step between
// sublayers. x and residual: contiguous [rows, dim] of one dtype.
void add_rms_norm(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight,
                  double eps);

}  // namespace nanovllm::kernels::cpu
