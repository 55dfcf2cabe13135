// The architecture of a Hugging Face checkpoint, read from its config.json (and the eos
// tokens of generation_config.json). Plain data: no Torch.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace nanovllm {

// Llama 3's frequency-dependent RoPE scaling (rope_type "llama3").
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::vector<std::string> architectures;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;  // defaults to num_attention_heads (no GQA)
  int head_dim = 0;             // defaults to hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<Llama3RopeScaling> llama3_rope_scaling;
  int max_position_embeddings = 0;
  int vocab_size = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  // "float32", "bfloat16", "float16", or "" when the config names none.
  std::string torch_dtype;
  // Union of config.json's and generation_config.json's eos_token_id, in that order.
  std::vector<int32_t> eos_token_ids;
};

// Reads <model_dir>/config.json and, when present, <model_dir>/generation_config.json.
// Throws std::runtime_error naming the file and field when one is missing or malformed,
// or when the checkpoint uses something this runner does not implement (activation,
// RoPE type).
ModelConfig load_model_config(const std::filesystem::path& model_dir);

}  // namespace nanovllm
