#include "decoder_model.h"

#include <cmath>
#include <stdexcept>
#include <utility>

#include <ATen/ops/cat.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/zeros_like.h>

#include "cpu/paged_attention.h"
#include "cpu/rms_norm.h"

namespace nanovllm {
namespace {

std::string shape_string(at::IntArrayRef shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// Reads tensors by their Hugging Face names, checks each shape against what config.json
// implies, and copies it into memory the model owns, in the model's dtype (aligned for the
// GEMM libraries, and the checkpoint's mapping can go once loading is done).
class WeightLoader {
 public:
  WeightLoader(const SafetensorsWeights& weights, at::ScalarType dtype)
      : weights_(weights), dtype_(dtype) {}

  at::Tensor get(const std::string& name, std::vector<int64_t> shape) const {
    return checked(name, shape).to(dtype_, /*non_blocking=*/false, /*copy=*/true);
  }

  // Several tensors concatenated along dim 0: one GEMM instead of several.
  at::Tensor fused(const std::vector<std::pair<std::string, std::vector<int64_t>>>& parts) const {
    std::vector<at::Tensor> tensors;
    for (const auto& [name, shape] : parts) tensors.push_back(checked(name, shape).to(dtype_));
    return at::cat(tensors, 0);
  }

 private:
  at::Tensor checked(const std::string& name, const std::vector<int64_t>& shape) const {
    at::Tensor tensor = weights_.get(name);
    if (tensor.sizes() != at::IntArrayRef(shape)) {
      throw std::runtime_error("tensor \"" + name + "\" in " + weights_.describe_files() +
                               " has shape " + shape_string(tensor.sizes()) + ", expected " +
                               shape_string(shape) + " from config.json");
    }
    return tensor;
  }

  const SafetensorsWeights& weights_;
  at::ScalarType dtype_;
};

}  // namespace

DecoderModel::DecoderModel(const ModelConfig& config, const DecoderTraits& traits,
                           const SafetensorsWeights& weights, at::ScalarType dtype,
                           int max_positions)
    : config_(config), traits_(traits), dtype_(dtype), rotary_(config, max_positions) {
  const WeightLoader loader(weights, dtype);
  const int64_t hidden = config.hidden_size;
  const int64_t q_size = int64_t{config.num_attention_heads} * config.head_dim;
  const int64_t kv_size = int64_t{config.num_key_value_heads} * config.head_dim;
  const int64_t inter = config.intermediate_size;

  embed_tokens_ = loader.get("model.embed_tokens.weight", {config.vocab_size, hidden});
  final_norm_ = loader.get("model.norm.weight", {hidden});
  lm_head_ = Linear(config.tie_word_embeddings
                        ? embed_tokens_
                        : loader.get("lm_head.weight", {config.vocab_size, hidden}),
                    at::Tensor());

  for (int i = 0; i < config.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer layer;
    layer.input_norm = loader.get(p + "input_layernorm.weight", {hidden});
    layer.post_attention_norm = loader.get(p + "post_attention_layernorm.weight", {hidden});
    if (traits.qk_norm) {
      layer.q_norm = loader.get(p + "self_attn.q_norm.weight", {config.head_dim});
      layer.k_norm = loader.get(p + "self_attn.k_norm.weight", {config.head_dim});
    }
    at::Tensor qkv_bias;
    if (traits.qkv_bias) {
      qkv_bias = loader.fused({{p + "self_attn.q_proj.bias", {q_size}},
                               {p + "self_attn.k_proj.bias", {kv_size}},
                               {p + "self_attn.v_proj.bias", {kv_size}}});
    }
    layer.qkv = Linear(loader.fused({{p + "self_attn.q_proj.weight", {q_size, hidden}},
                                     {p + "self_attn.k_proj.weight", {kv_size, hidden}},
                                     {p + "self_attn.v_proj.weight", {kv_size, hidden}}}),
                       qkv_bias);
    layer.o_proj = Linear(loader.get(p + "self_attn.o_proj.weight", {hidden, q_size}), at::Tensor());
    layer.gate_up = Linear(loader.fused({{p + "mlp.gate_proj.weight", {inter, hidden}},
                                         {p + "mlp.up_proj.weight", {inter, hidden}}}),
                           at::Tensor());
    layer.down = Linear(loader.get(p + "mlp.down_proj.weight", {hidden, inter}), at::Tensor());
    layers_.push_back(std::move(layer));
  }
}

at::Tensor DecoderModel::forward(const InputBatch& batch, const KVCache& cache) const {
  const double eps = config_.rms_norm_eps;
  at::Tensor hidden = at::embedding(embed_tokens_, batch.token_ids());
  // The residual stream starts at zero so that every sublayer begins with the same fused
  // add + norm (0 + x is exact).
  at::Tensor residual = at::zeros_like(hidden);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& layer = layers_[i];
    kernels::cpu::add_rms_norm(hidden, residual, layer.input_norm, eps);
    hidden = attention(layer, static_cast<int>(i), hidden, batch, cache);
    kernels::cpu::add_rms_norm(hidden, residual, layer.post_attention_norm, eps);
    hidden = mlp(layer, hidden);
  }
  // Only the positions that sample need the final norm and the (vocab-sized) LM head.
  at::Tensor last_hidden = hidden.index_select(0, batch.sample_indices());
  at::Tensor last_residual = residual.index_select(0, batch.sample_indices());
  kernels::cpu::add_rms_norm(last_hidden, last_residual, final_norm_, eps);
  return lm_head_(last_hidden).to(at::kFloat);
}

at::Tensor DecoderModel::attention(const Layer& layer, int index, const at::Tensor& x,
                                   const InputBatch& batch, const KVCache& cache) const {
  const int64_t tokens = x.size(0);
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv_heads = config_.num_key_value_heads;
  const int64_t head_dim = config_.head_dim;
  // q, k and v stay views of the fused projection; the kernels take strided tokens.
  const at::Tensor qkv = layer.qkv(x);
  const at::Tensor q = qkv.narrow(1, 0, heads * head_dim).view({tokens, heads, head_dim});
  const at::Tensor k = qkv.narrow(1, heads * head_dim, kv_heads * head_dim).view({tokens, kv_heads, head_dim});
  const at::Tensor v =
      qkv.narrow(1, (heads + kv_heads) * head_dim, kv_heads * head_dim).view({tokens, kv_heads, head_dim});
  if (traits_.qk_norm) {
    kernels::cpu::rms_norm(q, q, layer.q_norm, config_.rms_norm_eps);
    kernels::cpu::rms_norm(k, k, layer.k_norm, config_.rms_norm_eps);
  }
  rotary_.apply(q, k, batch.positions());
  kernels::cpu::store_kv(k, v, cache.key(index), cache.value(index), batch.slot_mapping());
  const at::Tensor out = at::empty({tokens, heads, head_dim}, x.options());
  kernels::cpu::paged_attention(out, q, cache.key(index), cache.value(index), batch.block_tables(),
                                batch.query_start_loc(), batch.context_lens(),
                                1.0 / std::sqrt(static_cast<double>(head_dim)));
  return layer.o_proj(out.view({tokens, heads * head_dim}));
}

at::Tensor DecoderModel::mlp(const Layer& layer, const at::Tensor& x) const {
  const int64_t inter = config_.intermediate_size;
  const at::Tensor gate_up = layer.gate_up(x);
  at::Tensor act = at::silu(gate_up.narrow(1, 0, inter));
  act.mul_(gate_up.narrow(1, inter, inter));
  return layer.down(act);
}

}  // namespace nanovllm
