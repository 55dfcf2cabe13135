#include "model_config.h"

#include <algorithm>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace nanovllm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw std::runtime_error(path.string() + " is not valid JSON: " + e.what());
  }
}

// Field access that names the file and the field when the value is missing or mistyped.
// JSON null counts as absent (configs write "head_dim": null, "rope_scaling": null).
class Fields {
 public:
  Fields(const json& object, const fs::path& path) : object_(object), path_(path) {}

  bool has(const char* key) const { return object_.contains(key) && !object_[key].is_null(); }

  template <typename T>
  T get(const char* key) const {
    if (!has(key)) fail(key, "is missing");
    try {
      return object_[key].get<T>();
    } catch (const json::exception&) {
      fail(key, "has an unexpected type: " + object_[key].dump());
    }
  }

  template <typename T>
  T get_or(const char* key, T fallback) const {
    return has(key) ? get<T>(key) : fallback;
  }

  int positive_int(const char* key) const {
    const int value = get<int>(key);
    if (value <= 0) fail(key, "must be positive, got " + std::to_string(value));
    return value;
  }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw std::runtime_error(path_.string() + ": \"" + key + "\" " + what);
  }

  const json& object() const { return object_; }

 private:
  const json& object_;
  const fs::path& path_;
};

void append_eos_ids(const Fields& fields, std::vector<int32_t>& ids) {
  if (!fields.has("eos_token_id")) return;
  const json& value = fields.object()["eos_token_id"];
  std::vector<int32_t> found;
  if (value.is_array()) {
    found = fields.get<std::vector<int32_t>>("eos_token_id");
  } else {
    found.push_back(fields.get<int32_t>("eos_token_id"));
  }
  for (int32_t id : found) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  }
}

// transformers 4 writes "rope_theta" and an optional "rope_scaling" dict; transformers 5
// writes both inside "rope_parameters". Either spelling is accepted.
void parse_rope(const Fields& config, const fs::path& path, ModelConfig& out) {
  const char* dict_key = config.has("rope_scaling")      ? "rope_scaling"
                         : config.has("rope_parameters") ? "rope_parameters"
                                                         : nullptr;
  out.rope_theta = config.get_or<double>("rope_theta", 10000.0);
  if (dict_key == nullptr) return;
  if (!config.object()[dict_key].is_object()) config.fail(dict_key, "must be an object");
  const Fields rope(config.object()[dict_key], path);
  if (!config.has("rope_theta")) out.rope_theta = rope.get_or<double>("rope_theta", 10000.0);

  const std::string type = rope.has("rope_type") ? rope.get<std::string>("rope_type")
                                                 : rope.get_or<std::string>("type", "default");
  if (type == "default") return;
  if (type == "llama3") {
    Llama3RopeScaling scaling;
    scaling.factor = rope.get<double>("factor");
    scaling.low_freq_factor = rope.get<double>("low_freq_factor");
    scaling.high_freq_factor = rope.get<double>("high_freq_factor");
    scaling.original_max_position_embeddings = rope.positive_int("original_max_position_embeddings");
    if (!(scaling.high_freq_factor > scaling.low_freq_factor)) {
      rope.fail("high_freq_factor", "must be greater than low_freq_factor");
    }
    out.llama3_rope_scaling = scaling;
    return;
  }
  config.fail(std::string(dict_key) + ".rope_type",
              "is \"" + type + "\", which is not supported (supported: default, llama3)");
}

}  // namespace

ModelConfig load_model_config(const fs::path& model_dir) {
  const fs::path path = model_dir / "config.json";
  if (!fs::exists(path)) {
    throw std::runtime_error("model folder " + model_dir.string() +
                             " has no config.json (expected a Hugging Face model folder)");
  }
  const json root = read_json(path);
  if (!root.is_object()) throw std::runtime_error(path.string() + " must hold a JSON object");
  const Fields config(root, path);

  ModelConfig out;
  out.architectures = config.get<std::vector<std::string>>("architectures");
  if (out.architectures.empty()) config.fail("architectures", "is empty");
  out.hidden_size = config.positive_int("hidden_size");
  out.intermediate_size = config.positive_int("intermediate_size");
  out.num_hidden_layers = config.positive_int("num_hidden_layers");
  out.num_attention_heads = config.positive_int("num_attention_heads");
  out.num_key_value_heads =
      config.has("num_key_value_heads") ? config.positive_int("num_key_value_heads")
                                        : out.num_attention_heads;
  if (out.num_attention_heads % out.num_key_value_heads != 0) {
    config.fail("num_key_value_heads",
                "(" + std::to_string(out.num_key_value_heads) + ") must divide num_attention_heads (" +
                    std::to_string(out.num_attention_heads) + ")");
  }
  out.head_dim = config.has("head_dim") ? config.positive_int("head_dim")
                                        : out.hidden_size / out.num_attention_heads;
  if (out.head_dim <= 0 || out.head_dim % 2 != 0) {
    config.fail("head_dim", "must be a positive even number, got " + std::to_string(out.head_dim));
  }
  out.rms_norm_eps = config.get_or<double>("rms_norm_eps", 1e-6);
  out.max_position_embeddings = config.positive_int("max_position_embeddings");
  out.vocab_size = config.positive_int("vocab_size");
  out.tie_word_embeddings = config.get_or<bool>("tie_word_embeddings", false);
  out.attention_bias = config.get_or<bool>("attention_bias", false);
  out.torch_dtype = config.has("dtype") ? config.get<std::string>("dtype")
                                        : config.get_or<std::string>("torch_dtype", "");
  const std::string act = config.get_or<std::string>("hidden_act", "silu");
  if (act != "silu") config.fail("hidden_act", "is \"" + act + "\"; only \"silu\" is supported");
  parse_rope(config, path, out);

  append_eos_ids(config, out.eos_token_ids);
  const fs::path generation_path = model_dir / "generation_config.json";
  if (fs::exists(generation_path)) {
    const json generation = read_json(generation_path);
    if (generation.is_object()) append_eos_ids(Fields(generation, generation_path), out.eos_token_ids);
  }
  return out;
}

}  // namespace nanovllm
