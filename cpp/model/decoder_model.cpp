#include "decoder_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <utility>

#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>

#include "cpu/activation.h"
#include "cpu/paged_attention.h"
#include "cpu/rms_norm.h"
#include "step_profiler.h"

namespace nanovllm {
namespace {

// Rows of the gate/up product computed at once (see DecoderModel::mlp).
constexpr int64_t kMlpBlockRows = 512;

// out[i] = table[ids[i]]: a few KB per token, copied on this thread (ATen's index_select
// would wake the thread pool for a decode batch).
void gather_rows(const at::Tensor& out, const at::Tensor& table, const at::Tensor& ids) {
  const int64_t row_bytes = table.size(1) * static_cast<int64_t>(table.element_size());
  const int64_t* id = ids.const_data_ptr<int64_t>();
  const auto* src = static_cast<const char*>(table.const_data_ptr());
  auto* dst = static_cast<char*>(out.data_ptr());
  for (int64_t i = 0; i < ids.numel(); ++i) {
    TORCH_CHECK(id[i] >= 0 && id[i] < table.size(0), "token id ", id[i], " outside the vocabulary of ",
                table.size(0));
    std::memcpy(dst + i * row_bytes, src + id[i] * row_bytes, row_bytes);
  }
}

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
                           int max_positions, Quantization quantization)
    : config_(config), traits_(traits), dtype_(dtype), rotary_(config, max_positions) {
  const WeightLoader loader(weights, dtype);
  const int64_t hidden = config.hidden_size;
  const int64_t q_size = int64_t{config.num_attention_heads} * config.head_dim;
  const int64_t kv_size = int64_t{config.num_key_value_heads} * config.head_dim;
  const int64_t inter = config.intermediate_size;

  final_norm_ = loader.get("model.norm.weight", {hidden});
  // A tied LM head holds the only copy of the table, packed or quantized like any Linear.
  const at::Tensor embed = loader.get("model.embed_tokens.weight", {config.vocab_size, hidden});
  if (config.tie_word_embeddings) {
    lm_head_ = Linear(embed, at::Tensor(), quantization);
  } else {
    embed_tokens_ = embed;
    lm_head_ = Linear(loader.get("lm_head.weight", {config.vocab_size, hidden}), at::Tensor(), quantization);
  }

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
                       qkv_bias, quantization);
    layer.o_proj =
        Linear(loader.get(p + "self_attn.o_proj.weight", {hidden, q_size}), at::Tensor(), quantization);
    layer.gate_up = Linear(loader.fused({{p + "mlp.gate_proj.weight", {inter, hidden}},
                                         {p + "mlp.up_proj.weight", {inter, hidden}}}),
                           at::Tensor(), quantization);
    layer.down = Linear(loader.get(p + "mlp.down_proj.weight", {hidden, inter}), at::Tensor(), quantization);
    layers_.push_back(std::move(layer));
  }
}

at::Tensor DecoderModel::forward(const InputBatch& batch, const KVCache& cache) {
  using profile::Phase;
  using profile::Scope;
  const double eps = config_.rms_norm_eps;
  const int64_t tokens = batch.num_tokens();
  reserve_workspace(tokens);
  // The residual stream and `hidden` (each sublayer's normalised input, then its output,
  // normalised in place by the next add + norm) live in the workspace, and every GEMM
  // writes into it: once the workspace has grown to the longest step, a step allocates
  // nothing.
  const at::Tensor residual = workspace_.residual.narrow(0, 0, tokens);
  const at::Tensor hidden = workspace_.hidden.narrow(0, 0, tokens);
  {
    Scope scope(Phase::kEmbedding);
    if (embed_tokens_.defined()) {
      gather_rows(residual, embed_tokens_, batch.token_ids());
    } else {
      lm_head_.rows(residual, batch.token_ids());
    }
  }
  {
    Scope scope(Phase::kNorm);
    kernels::cpu::rms_norm(hidden, residual, layers_.front().input_norm, eps);
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& layer = layers_[i];
    if (i > 0) {
      Scope scope(Phase::kNorm);
      kernels::cpu::add_rms_norm(hidden, residual, layer.input_norm, eps);
    }
    attention(layer, static_cast<int>(i), hidden, batch, cache);
    {
      Scope scope(Phase::kNorm);
      kernels::cpu::add_rms_norm(hidden, residual, layer.post_attention_norm, eps);
    }
    mlp(layer, hidden);
  }
  // Only the positions that sample need the final norm and the (vocab-sized) LM head; a
  // decode step samples every row and needs no gather.
  Scope scope(Phase::kLMHead);
  const at::Tensor& rows = batch.sample_indices();
  const bool every_row = rows.numel() == tokens;
  at::Tensor last_hidden = every_row ? hidden : hidden.index_select(0, rows);
  at::Tensor last_residual = every_row ? residual : residual.index_select(0, rows);
  kernels::cpu::add_rms_norm(last_hidden, last_residual, final_norm_, eps);
  // Into a buffer kept across steps: a batch's float32 logits are tens of MB, which a fresh
  // allocation takes from the OS (and faults in page by page) every step.
  const int64_t num_rows = last_hidden.size(0);
  if (!workspace_.logits.defined() || workspace_.logits.size(0) < num_rows) {
    workspace_.logits = at::empty({num_rows, config_.vocab_size}, at::TensorOptions().dtype(at::kFloat));
  }
  at::Tensor logits = workspace_.logits.narrow(0, 0, num_rows);
  lm_head_(last_hidden, logits);
  return logits;
}

void DecoderModel::reserve_workspace(int64_t tokens) {
  if (workspace_.residual.defined() && workspace_.residual.size(0) >= tokens) return;
  const auto options = at::TensorOptions().dtype(dtype_);
  const int64_t q_size = int64_t{config_.num_attention_heads} * config_.head_dim;
  const int64_t qkv_size = q_size + int64_t{2} * config_.num_key_value_heads * config_.head_dim;
  workspace_.residual = at::empty({tokens, config_.hidden_size}, options);
  workspace_.hidden = at::empty({tokens, config_.hidden_size}, options);
  workspace_.qkv = at::empty({tokens, qkv_size}, options);
  workspace_.attention = at::empty({tokens, q_size}, options);
  workspace_.gate_up = at::empty({std::min(tokens, kMlpBlockRows), 2 * config_.intermediate_size}, options);
  workspace_.activation = at::empty({tokens, config_.intermediate_size}, options);
}

void DecoderModel::attention(const Layer& layer, int index, const at::Tensor& hidden,
                             const InputBatch& batch, const KVCache& cache) {
  using profile::Phase;
  using profile::Scope;
  const int64_t tokens = hidden.size(0);
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv_heads = config_.num_key_value_heads;
  const int64_t head_dim = config_.head_dim;
  const at::Tensor qkv = workspace_.qkv.narrow(0, 0, tokens);
  {
    Scope scope(Phase::kQKV);
    layer.qkv(hidden, qkv);
  }
  // q, k and v stay views of the fused projection; the kernels take strided tokens.
  const at::Tensor q = qkv.narrow(1, 0, heads * head_dim).view({tokens, heads, head_dim});
  const at::Tensor k = qkv.narrow(1, heads * head_dim, kv_heads * head_dim).view({tokens, kv_heads, head_dim});
  const at::Tensor v =
      qkv.narrow(1, (heads + kv_heads) * head_dim, kv_heads * head_dim).view({tokens, kv_heads, head_dim});
  if (traits_.qk_norm) {
    Scope scope(Phase::kNorm);
    kernels::cpu::rms_norm(q, q, layer.q_norm, config_.rms_norm_eps);
    kernels::cpu::rms_norm(k, k, layer.k_norm, config_.rms_norm_eps);
  }
  {
    Scope scope(Phase::kRotary);
    rotary_.apply(q, k, batch.positions());
  }
  {
    Scope scope(Phase::kStoreKV);
    kernels::cpu::store_kv(k, v, cache.key(index), cache.value(index), batch.slot_mapping());
  }
  const at::Tensor out = workspace_.attention.narrow(0, 0, tokens);
  {
    Scope scope(Phase::kAttention);
    kernels::cpu::paged_attention(out.view({tokens, heads, head_dim}), q, cache.key(index),
                                  cache.value(index), batch.block_tables(), batch.query_start_loc(),
                                  batch.context_lens(), 1.0 / std::sqrt(static_cast<double>(head_dim)));
  }
  Scope scope(Phase::kOProj);
  layer.o_proj(out, hidden);
}

void DecoderModel::mlp(const Layer& layer, const at::Tensor& hidden) {
  using profile::Phase;
  using profile::Scope;
  const int64_t tokens = hidden.size(0);
  const at::Tensor activation = workspace_.activation.narrow(0, 0, tokens);
  // gate/up a block of rows at a time: however long the prefill, the [rows, 2 *
  // intermediate] product stays a few MB, in cache for the activation that reads it.
  for (int64_t first = 0; first < tokens; first += kMlpBlockRows) {
    const int64_t rows = std::min(kMlpBlockRows, tokens - first);
    const at::Tensor gate_up = workspace_.gate_up.narrow(0, 0, rows);
    {
      Scope scope(Phase::kGateUp);
      layer.gate_up(hidden.narrow(0, first, rows), gate_up);
    }
    Scope scope(Phase::kActivation);
    kernels::cpu::silu_and_mul(activation.narrow(0, first, rows), gate_up);
  }
  Scope scope(Phase::kDown);
  layer.down(activation, hidden);
}

}  // namespace nanovllm
