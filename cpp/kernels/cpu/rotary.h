// Rotary position embedding on the CPU, applied in place to query and key heads.
#pragma once

#include <ATen/core/Tensor.h>

namespace nanovllm::kernels::cpu {

// Rotates every head of query [tokens, heads, head_dim] and key [tokens, kv_heads,
// head_dim] by its token's position, Neox style (element i pairs with i + head_dim/2).
// Heads must be contiguous; the token stride may be anything (views of a fused QKV).
//   positions: int64 [tokens]
//   cos_sin:   float32 [max_positions, head_dim]: cos of the head_dim/2 angles, then sin
void apply_rotary(const at::Tensor& query, const at::Tensor& key, const at::Tensor& positions,
                  const at::Tensor& cos_sin);

}  // namespace nanovllm::kernels::cpu
