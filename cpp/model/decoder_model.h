// The decoder every supported family shares: embeddings; per layer RMSNorm → fused QKV →
// (per-head q/k RMSNorm) → rotary → paged attention → o_proj → residual, RMSNorm → fused
// gate/up → SiLU·up → down → residual; final RMSNorm; LM head. Families differ only in
// DecoderTraits.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "input_batch.h"
#include "kv_cache.h"
#include "linear.h"
#include "model_config.h"
#include "model_family.h"
#include "rotary_embedding.h"
#include "safetensors.h"

namespace nanovllm {

class DecoderModel {
 public:
  // Loads the weights (Hugging Face names) in `dtype`, fusing q/k/v and gate/up. Throws
  // std::runtime_error naming the tensor when one is missing or has the wrong shape.
  DecoderModel(const ModelConfig& config, const DecoderTraits& traits,
               const SafetensorsWeights& weights, at::ScalarType dtype, int max_positions);

  // Runs the batch's tokens, stores their K/V in the cache and returns the float32 logits
  // [batch.sample_indices().numel(), vocab] of the positions that sample. Call under
  // c10::InferenceMode.
  at::Tensor forward(const InputBatch& batch, const KVCache& cache) const;

 private:
  struct Layer {
    at::Tensor input_norm;           // [hidden]
    at::Tensor post_attention_norm;  // [hidden]
    at::Tensor q_norm;               // [head_dim], when traits.qk_norm
    at::Tensor k_norm;               // [head_dim], when traits.qk_norm
    Linear qkv;                      // [(heads + 2 kv_heads) * head_dim, hidden]
    Linear o_proj;                   // [hidden, heads * head_dim]
    Linear gate_up;                  // [2 * intermediate, hidden]
    Linear down;                     // [hidden, intermediate]
  };

  at::Tensor attention(const Layer& layer, int index, const at::Tensor& x,
                       const InputBatch& batch, const KVCache& cache) const;
  at::Tensor mlp(const Layer& layer, const at::Tensor& x) const;

  ModelConfig config_;
  DecoderTraits traits_;
  at::ScalarType dtype_;
  at::Tensor embed_tokens_;  // [vocab, hidden]
  at::Tensor final_norm_;    // [hidden]
  Linear lm_head_;           // shares embed_tokens_ when the embeddings are tied
  std::vector<Layer> layers_;
  RotaryEmbedding rotary_;
};

}  // namespace nanovllm
