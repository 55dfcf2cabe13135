// Reading a Hugging Face folder: config.json parsing, the safetensors reader, and the
// model-family registry, including the errors a user sees for a bad folder.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "model_config.h"
#include "model_family.h"
#include "safetensors.h"
#include "test_model_files.h"

namespace nanovllm {
namespace {

using nlohmann::json;
using testing::expect_error;
using testing::TempDir;
using testing::write_json;
using testing::write_safetensors;

TEST(ModelConfig, ReadsTransformers5Layout) {
  TempDir dir;
  json config = testing::tiny_config("LlamaForCausalLM");
  config.erase("rope_theta");
  config["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000.0}};
  config["dtype"] = "bfloat16";
  config["eos_token_id"] = json::array({2, 7});
  write_json(dir.path() / "config.json", config);
  write_json(dir.path() / "generation_config.json", {{"eos_token_id", json::array({7, 9})}});

  const ModelConfig parsed = load_model_config(dir.path());
  EXPECT_EQ(parsed.architectures, std::vector<std::string>{"LlamaForCausalLM"});
  EXPECT_EQ(parsed.hidden_size, 64);
  EXPECT_EQ(parsed.num_attention_heads, 4);
  EXPECT_EQ(parsed.num_key_value_heads, 2);
  EXPECT_EQ(parsed.head_dim, 16);  // hidden_size / num_attention_heads
  EXPECT_DOUBLE_EQ(parsed.rope_theta, 500000.0);
  EXPECT_FALSE(parsed.llama3_rope_scaling.has_value());
  EXPECT_EQ(parsed.torch_dtype, "bfloat16");
  EXPECT_EQ(parsed.eos_token_ids, (std::vector<int32_t>{2, 7, 9}));
}

TEST(ModelConfig, ReadsTransformers4LayoutAndLlama3Scaling) {
  TempDir dir;
  json config = testing::tiny_config("LlamaForCausalLM");
  config.erase("dtype");
  config.erase("num_key_value_heads");
  config["torch_dtype"] = "float16";
  config["head_dim"] = 32;
  config["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", 8.0},
                            {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 8192}};
  write_json(dir.path() / "config.json", config);

  const ModelConfig parsed = load_model_config(dir.path());
  EXPECT_EQ(parsed.num_key_value_heads, 4);  // no GQA when absent
  EXPECT_EQ(parsed.head_dim, 32);
  EXPECT_DOUBLE_EQ(parsed.rope_theta, 10000.0);
  ASSERT_TRUE(parsed.llama3_rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(parsed.llama3_rope_scaling->factor, 8.0);
  EXPECT_EQ(parsed.llama3_rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_EQ(parsed.torch_dtype, "float16");
  EXPECT_EQ(parsed.eos_token_ids, std::vector<int32_t>{2});
}

TEST(ModelConfig, ErrorsNameTheFileAndField) {
  TempDir dir;
  expect_error([&] { load_model_config(dir.path()); }, {"config.json", dir.path().string()});

  json config = testing::tiny_config("LlamaForCausalLM");
  config.erase("hidden_size");
  write_json(dir.path() / "config.json", config);
  expect_error([&] { load_model_config(dir.path()); }, {"config.json", "\"hidden_size\"", "missing"});

  config = testing::tiny_config("LlamaForCausalLM");
  config["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  write_json(dir.path() / "config.json", config);
  expect_error([&] { load_model_config(dir.path()); }, {"yarn", "supported: default, llama3"});

  config = testing::tiny_config("LlamaForCausalLM");
  config["hidden_act"] = "gelu";
  write_json(dir.path() / "config.json", config);
  expect_error([&] { load_model_config(dir.path()); }, {"hidden_act", "gelu"});

  config = testing::tiny_config("LlamaForCausalLM");
  config["num_key_value_heads"] = 3;
  write_json(dir.path() / "config.json", config);
  expect_error([&] { load_model_config(dir.path()); }, {"num_key_value_heads", "divide"});

  std::ofstream(dir.path() / "config.json") << "{ not json";
  expect_error([&] { load_model_config(dir.path()); }, {"config.json", "not valid JSON"});
}

TEST(ModelFamily, KnowsTheSupportedArchitectures) {
  ModelConfig config;
  config.architectures = {"Qwen3ForCausalLM"};
  EXPECT_EQ(find_model_family(config).architecture, "Qwen3ForCausalLM");
  EXPECT_TRUE(find_model_family(config).traits(config).qk_norm);

  config.architectures = {"Qwen2ForCausalLM"};
  EXPECT_TRUE(find_model_family(config).traits(config).qkv_bias);

  config.architectures = {"LlamaForCausalLM"};
  config.attention_bias = true;
  const DecoderTraits llama = find_model_family(config).traits(config);
  EXPECT_TRUE(llama.qkv_bias);
  EXPECT_FALSE(llama.qk_norm);

  config.architectures = {"MistralForCausalLM", "GPT2LMHeadModel"};
  expect_error([&] { find_model_family(config); },
               {"MistralForCausalLM", "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"});
}

TEST(Safetensors, ReadsTensorsOfEachDtypeWithoutCopying) {
  TempDir dir;
  const at::Tensor f32 = at::randn({3, 5});
  const at::Tensor bf16 = at::randn({4}).to(at::kBFloat16);
  const at::Tensor f16 = at::randn({2, 2, 2}).to(at::kHalf);
  write_safetensors(dir.path() / "model.safetensors", {{"a", f32}, {"b", bf16}, {"c", f16}});

  at::Tensor a;
  {
    const SafetensorsWeights weights(dir.path());
    EXPECT_TRUE(weights.contains("b"));
    EXPECT_FALSE(weights.contains("d"));
    a = weights.get("a");
    EXPECT_TRUE(at::equal(weights.get("b"), bf16));
    EXPECT_TRUE(at::equal(weights.get("c"), f16));
  }
  // The view outlives the reader: it keeps the file mapped.
  EXPECT_TRUE(at::equal(a, f32));
}

TEST(Safetensors, FollowsTheShardIndex) {
  TempDir dir;
  write_safetensors(dir.path() / "model-00001-of-00002.safetensors", {{"x", at::ones({2})}});
  write_safetensors(dir.path() / "model-00002-of-00002.safetensors", {{"y", at::zeros({3})}});
  // A stray file the index does not name is ignored.
  write_safetensors(dir.path() / "stale.safetensors", {{"z", at::ones({1})}});
  write_json(dir.path() / "model.safetensors.index.json",
             {{"metadata", json::object()},
              {"weight_map",
               {{"x", "model-00001-of-00002.safetensors"}, {"y", "model-00002-of-00002.safetensors"}}}});
  const SafetensorsWeights weights(dir.path());
  EXPECT_TRUE(at::equal(weights.get("x"), at::ones({2})));
  EXPECT_TRUE(at::equal(weights.get("y"), at::zeros({3})));
  EXPECT_FALSE(weights.contains("z"));
}

TEST(Safetensors, ErrorsNameTheTensorAndFiles) {
  TempDir dir;
  expect_error([&] { SafetensorsWeights weights(dir.path()); }, {"no *.safetensors", dir.path().string()});

  write_safetensors(dir.path() / "model.safetensors",
                    {{"w", at::ones({2})}, {"q", at::ones({2}, at::kChar)}});
  const SafetensorsWeights weights(dir.path());
  expect_error([&] { weights.get("missing.weight"); }, {"missing.weight", "model.safetensors"});
  expect_error([&] { weights.get("q"); }, {"\"q\"", "I8", "BF16, F16, F32"});

  TempDir broken;
  std::ofstream(broken.path() / "model.safetensors") << std::string("\xff\xff\xff\xff\x00\x00\x00\x00{}", 10);
  expect_error([&] { SafetensorsWeights bad(broken.path()); }, {"model.safetensors", "header"});
}

}  // namespace
}  // namespace nanovllm
