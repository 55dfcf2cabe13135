// Rotary position embedding: the cos/sin table for a model's RoPE settings (plain or
// Llama 3 scaled), applied in place by the CPU kernel.
#pragma once

#include <ATen/core/Tensor.h>

#include "model_config.h"

namespace nanovllm {

class RotaryEmbedding {
 public:
  // Precomputes angles for positions [0, max_positions).
  RotaryEmbedding(const ModelConfig& config, int max_positions);

  // query: [tokens, heads, head_dim], key: [tokens, kv_heads, head_dim] (heads contiguous),
  // rotated in place; positions: int64 [tokens].
  void apply(const at::Tensor& query, const at::Tensor& key, const at::Tensor& positions) const;

 private:
  at::Tensor cos_sin_;  // float32 [max_positions, head_dim]: cos, then sin, of each angle
};

}  // namespace nanovllm
