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
  // Loads the weights (Hugging Face names) in `dtype`, fusing q/k/v and gate/up, and
  // quantizes the projections and the LM head as asked. Throws std::runtime_error naming
  // the tensor when one is missing or has the wrong shape.
  DecoderModel(const ModelConfig& config, const DecoderTraits& traits,
               const SafetensorsWeights& weights, at::ScalarType dtype, int max_positions,
               Quantization quantization = Quantization::kNone);

  // Runs the batch's tokens, stores their K/V in the cache and returns the float32 logits
  // [batch.sample_indices().numel(), vocab] of the positions that sample, valid until the
  // next call. Call under c10::InferenceMode. Not reentrant: the activations live in one
  // workspace.
  at::Tensor forward(const InputBatch& batch, const KVCache& cache);

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

  // Every activation of a step, kept across steps so that a forward allocates nothing.
  // Grown to the largest step seen, never shrunk.
  struct Workspace {
    at::Tensor residual;    // [capacity, hidden]
    at::Tensor hidden;      // [capacity, hidden]: sublayer inputs and outputs
    at::Tensor qkv;         // [capacity, (heads + 2 kv_heads) * head_dim]
    at::Tensor attention;   // [capacity, heads * head_dim]
    at::Tensor gate_up;     // [MLP block rows, 2 * intermediate]
    at::Tensor activation;  // [capacity, intermediate]
    at::Tensor logits;      // float32 [sampled rows capacity, vocab]
  };

  void reserve_workspace(int64_t tokens);
  // The sublayers: `hidden` [tokens, hidden_size] holds the normalised input and is
  // overwritten with the sublayer's output.
  void attention(const Layer& layer, int index, const at::Tensor& hidden, const InputBatch& batch,
                 const KVCache& cache);
  void mlp(const Layer& layer, const at::Tensor& hidden);

  ModelConfig config_;
  DecoderTraits traits_;
  at::ScalarType dtype_;
  at::Tensor embed_tokens_;  // [vocab, hidden]; undefined when tied to the LM head
  at::Tensor final_norm_;    // [hidden]
  Linear lm_head_;           // with tied embeddings also the embedding table (rows())
  std::vector<Layer> layers_;
  RotaryEmbedding rotary_;
  Workspace workspace_;
};

}  // namespace nanovllm
