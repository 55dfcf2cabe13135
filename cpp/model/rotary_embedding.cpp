#include "rotary_embedding.h"

#include <numbers>

#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/outer.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/where.h>

#include "cpu/rotary.h"

namespace nanovllm {
namespace {

// Llama 3: long wavelengths are slowed down by `factor`, short ones kept, and the band in
// between interpolated. Float32 tensor ops in Hugging Face's order, so that the angles
// (and hence the logits) match the reference bit for bit.
at::Tensor llama3_inv_freq(const at::Tensor& inv_freq, const Llama3RopeScaling& s) {
  const double low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const double high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
  const at::Tensor wavelen = inv_freq.reciprocal().mul(2.0 * std::numbers::pi);
  const at::Tensor scaled = at::where(wavelen.gt(low_freq_wavelen), inv_freq.div(s.factor), inv_freq);
  const at::Tensor smooth = wavelen.reciprocal()
                                .mul(s.original_max_position_embeddings)
                                .sub(s.low_freq_factor)
                                .div(s.high_freq_factor - s.low_freq_factor);
  const at::Tensor smoothed = smooth.neg().add(1).mul(scaled).div(s.factor).add(smooth.mul(scaled));
  const at::Tensor medium = wavelen.ge(high_freq_wavelen).logical_and(wavelen.le(low_freq_wavelen));
  return at::where(medium, smoothed, scaled);
}

}  // namespace

RotaryEmbedding::RotaryEmbedding(const ModelConfig& config, int max_positions) {
  const int head_dim = config.head_dim;
  const at::Tensor exponents = at::arange(0, head_dim, 2, at::kLong).to(at::kFloat).div(head_dim);
  at::Tensor inv_freq = at::pow(config.rope_theta, exponents).reciprocal();
  if (config.llama3_rope_scaling) inv_freq = llama3_inv_freq(inv_freq, *config.llama3_rope_scaling);
  const at::Tensor angles = at::outer(at::arange(max_positions, at::kLong).to(at::kFloat), inv_freq);
  cos_sin_ = at::cat({angles.cos(), angles.sin()}, 1).contiguous();
}

void RotaryEmbedding::apply(const at::Tensor& query, const at::Tensor& key,
                            const at::Tensor& positions) const {
  kernels::cpu::apply_rotary(query, key, positions, cos_sin_);
}

}  // namespace nanovllm
