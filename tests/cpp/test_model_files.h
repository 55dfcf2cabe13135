// Helpers for the model tests: temporary folders, and Hugging Face style model folders
// (config.json + safetensors) with small random weights, written without Python.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace nanovllm::testing {

// Runs `fn`, expecting an exception whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    FAIL() << "no exception; expected one mentioning " << parts.front();
  } catch (const std::exception& e) {
    for (const std::string& part : parts) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "message \"" << e.what() << "\" lacks \"" << part << "\"";
    }
  }
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "nanovllm-test-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline void write_json(const std::filesystem::path& path, const nlohmann::json& value) {
  std::ofstream(path) << value.dump(2);
}

inline std::string safetensors_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "F32";
    case at::kBFloat16: return "BF16";
    case at::kHalf: return "F16";
    case at::kChar: return "I8";
    default: throw std::invalid_argument("test helper: no safetensors name for this dtype");
  }
}

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// The safetensors layout: 8-byte little-endian header size, JSON header, raw data.
inline void write_safetensors(const std::filesystem::path& path, const NamedTensors& tensors) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  size_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const size_t bytes = tensor.numel() * tensor.element_size();
    header[name] = {{"dtype", safetensors_dtype(tensor.scalar_type())},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::ofstream out(path, std::ios::binary);
  const uint64_t size = text.size();
  out.write(reinterpret_cast<const char*>(&size), sizeof(size));
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, tensor] : tensors) {
    const at::Tensor data = tensor.contiguous();
    out.write(static_cast<const char*>(data.data_ptr()),
              static_cast<std::streamsize>(data.numel() * data.element_size()));
  }
}

// A tiny decoder of the given architecture: 2 layers, hidden 64, 4 heads over 2 kv heads.
inline nlohmann::json tiny_config(const std::string& architecture) {
  nlohmann::json config = {
      {"architectures", {architecture}},
      {"hidden_size", 64},
      {"intermediate_size", 128},
      {"num_hidden_layers", 2},
      {"num_attention_heads", 4},
      {"num_key_value_heads", 2},
      {"max_position_embeddings", 256},
      {"vocab_size", 97},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},
      {"tie_word_embeddings", false},
      {"dtype", "float32"},
      {"eos_token_id", 2},
      {"hidden_act", "silu"},
  };
  if (architecture == "Qwen3ForCausalLM") config["head_dim"] = 32;
  return config;
}

// Random weights with the names and shapes config.json implies (q/k/v biases for Qwen2,
// q/k norms for Qwen3). Norm weights stay near 1 and projections small, so activations
// keep a sensible scale through the layers.
inline NamedTensors tiny_weights(const nlohmann::json& config, uint64_t seed) {
  at::manual_seed(seed);
  const std::string architecture = config["architectures"][0];
  const int64_t hidden = config["hidden_size"];
  const int64_t inter = config["intermediate_size"];
  const int64_t heads = config["num_attention_heads"];
  const int64_t kv_heads = config["num_key_value_heads"];
  const int64_t head_dim = config.value("head_dim", hidden / heads);
  const int64_t vocab = config["vocab_size"];
  const auto matrix = [](int64_t rows, int64_t cols) { return at::randn({rows, cols}) * 0.15; };
  const auto norm = [](int64_t n) { return at::rand({n}) + 0.5; };
  NamedTensors weights;
  weights.emplace_back("model.embed_tokens.weight", at::randn({vocab, hidden}));
  weights.emplace_back("model.norm.weight", norm(hidden));
  if (!config.value("tie_word_embeddings", false)) {
    weights.emplace_back("lm_head.weight", matrix(vocab, hidden));
  }
  for (int layer = 0; layer < config["num_hidden_layers"].get<int>(); ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    weights.emplace_back(p + "input_layernorm.weight", norm(hidden));
    weights.emplace_back(p + "post_attention_layernorm.weight", norm(hidden));
    weights.emplace_back(p + "self_attn.q_proj.weight", matrix(heads * head_dim, hidden));
    weights.emplace_back(p + "self_attn.k_proj.weight", matrix(kv_heads * head_dim, hidden));
    weights.emplace_back(p + "self_attn.v_proj.weight", matrix(kv_heads * head_dim, hidden));
    weights.emplace_back(p + "self_attn.o_proj.weight", matrix(hidden, heads * head_dim));
    weights.emplace_back(p + "mlp.gate_proj.weight", matrix(inter, hidden));
    weights.emplace_back(p + "mlp.up_proj.weight", matrix(inter, hidden));
    weights.emplace_back(p + "mlp.down_proj.weight", matrix(hidden, inter));
    if (architecture == "Qwen2ForCausalLM") {
      weights.emplace_back(p + "self_attn.q_proj.bias", at::randn({heads * head_dim}) * 0.1);
      weights.emplace_back(p + "self_attn.k_proj.bias", at::randn({kv_heads * head_dim}) * 0.1);
      weights.emplace_back(p + "self_attn.v_proj.bias", at::randn({kv_heads * head_dim}) * 0.1);
    }
    if (architecture == "Qwen3ForCausalLM") {
      weights.emplace_back(p + "self_attn.q_norm.weight", norm(head_dim));
      weights.emplace_back(p + "self_attn.k_norm.weight", norm(head_dim));
    }
  }
  return weights;
}

// Writes config.json and model.safetensors for `config` into `dir`; returns the weights.
inline NamedTensors write_tiny_model(const std::filesystem::path& dir, const nlohmann::json& config,
                                     uint64_t seed = 0) {
  NamedTensors weights = tiny_weights(config, seed);
  write_json(dir / "config.json", config);
  write_safetensors(dir / "model.safetensors", weights);
  return weights;
}

}  // namespace nanovllm::testing
