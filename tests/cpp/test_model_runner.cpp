// The LibTorch model runner on tiny random models of each family: logits against a plain
// float64 re-implementation of the decoder (full recompute, no cache), invariance to
// chunking and batching, min_tokens, KV cache sizing, and the errors of a bad setup.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "kv_cache.h"
#include "nanovllm/torch_model_runner.h"
#include "test_model_files.h"
#include "torch_model_runner.h"

namespace nanovllm {
namespace {

using nlohmann::json;
using testing::expect_error;
using testing::TempDir;

// ---- the reference ---------------------------------------------------------------------

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return x * (x.pow(2).mean(-1, true) + eps).rsqrt() * weight;
}

// Inverse frequencies in float64, with Llama 3 scaling written from Meta's definition.
std::vector<double> inverse_frequencies(const json& config, int head_dim) {
  const double theta = config.value("rope_theta", 10000.0);
  std::vector<double> inv(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) inv[i] = std::pow(theta, -2.0 * i / head_dim);
  if (config.contains("rope_scaling")) {
    const json& s = config["rope_scaling"];
    const double factor = s["factor"], low = s["low_freq_factor"], high = s["high_freq_factor"];
    const double old_len = s["original_max_position_embeddings"];
    for (double& f : inv) {
      const double wavelen = 2 * M_PI / f;
      if (wavelen > old_len / low) {
        f /= factor;
      } else if (wavelen >= old_len / high) {
        const double smooth = (old_len / wavelen - low) / (high - low);
        f = (1 - smooth) * f / factor + smooth * f;
      }
    }
  }
  return inv;
}

at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor a = x.narrow(-1, 0, half);
  const at::Tensor b = x.narrow(-1, half, half);
  return at::cat({a * cos - b * sin, b * cos + a * sin}, -1);
}

// Logits [tokens, vocab] of every position of `tokens`, in float64.
at::Tensor reference_logits(const json& config, const testing::NamedTensors& named,
                            const std::vector<int32_t>& tokens) {
  std::map<std::string, at::Tensor> w;
  for (const auto& [name, tensor] : named) w[name] = tensor.to(at::kDouble);
  const std::string arch = config["architectures"][0];
  const int64_t heads = config["num_attention_heads"];
  const int64_t kv_heads = config["num_key_value_heads"];
  const int64_t head_dim = config.value("head_dim", config["hidden_size"].get<int64_t>() / heads);
  const double eps = config["rms_norm_eps"];
  const int64_t n = static_cast<int64_t>(tokens.size());

  const std::vector<double> inv = inverse_frequencies(config, static_cast<int>(head_dim));
  const at::Tensor angles = at::outer(at::arange(n, at::kDouble), at::tensor(inv, at::kDouble));
  const at::Tensor cos = angles.cos().unsqueeze(1);  // [n, 1, head_dim / 2]
  const at::Tensor sin = angles.sin().unsqueeze(1);
  const at::Tensor causal = at::ones({n, n}, at::kBool).triu(1);

  at::Tensor x = w["model.embed_tokens.weight"].index_select(0, at::tensor(tokens, at::kLong));
  for (int layer = 0; layer < config["num_hidden_layers"].get<int>(); ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    const auto proj = [&](const at::Tensor& in, const std::string& name) {
      at::Tensor out = at::matmul(in, w[p + name + ".weight"].t());
      return w.count(p + name + ".bias") ? out + w[p + name + ".bias"] : out;
    };
    const at::Tensor h = rms_norm(x, w[p + "input_layernorm.weight"], eps);
    at::Tensor q = proj(h, "self_attn.q_proj").view({n, heads, head_dim});
    at::Tensor k = proj(h, "self_attn.k_proj").view({n, kv_heads, head_dim});
    const at::Tensor v = proj(h, "self_attn.v_proj").view({n, kv_heads, head_dim});
    if (arch == "Qwen3ForCausalLM") {
      q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps);
      k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps);
    }
    q = rotate(q, cos, sin);
    k = rotate(k, cos, sin).repeat_interleave(heads / kv_heads, 1);
    at::Tensor scores = at::einsum("qhd,khd->hqk", {q, k}) / std::sqrt(static_cast<double>(head_dim));
    scores = scores.masked_fill(causal, -std::numeric_limits<double>::infinity());
    const at::Tensor attended = at::einsum("hqk,khd->qhd", {scores.softmax(-1), v.repeat_interleave(heads / kv_heads, 1)});
    x = x + proj(attended.reshape({n, heads * head_dim}), "self_attn.o_proj");
    const at::Tensor g = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps);
    x = x + proj(at::silu(proj(g, "mlp.gate_proj")) * proj(g, "mlp.up_proj"), "mlp.down_proj");
  }
  x = rms_norm(x, w["model.norm.weight"], eps);
  const at::Tensor head = w.count("lm_head.weight") ? w["lm_head.weight"] : w["model.embed_tokens.weight"];
  return at::matmul(x, head.t());
}

// ---- driving the runner by hand ---------------------------------------------------------

EngineConfig config_for(const std::filesystem::path& dir, int block_size = 4) {
  EngineConfig config;
  config.model = dir.string();
  config.kvcache_block_size = block_size;
  config.num_kvcache_blocks = 256;
  return config;
}

SamplingParams greedy() {
  SamplingParams params;
  params.temperature = 0.0f;
  return params;
}

// Plays the engine's part for a few sequences: hands out KV blocks (from the top, so
// tables are not the identity) and schedules each sequence's next chunk.
class Driver {
 public:
  explicit Driver(TorchModelRunner& runner) : runner_(runner), next_block_(runner.num_kvcache_blocks()) {}

  Sequence& add(std::vector<int32_t> prompt, SamplingParams params = greedy()) {
    seqs_.push_back(std::make_unique<Sequence>(static_cast<int64_t>(seqs_.size()), std::move(prompt), params, 0));
    return *seqs_.back();
  }

  // Runs one step: `chunk` tokens (at most what is left) of each listed sequence. Returns
  // the sampled tokens and the logits rows, in batch order.
  std::vector<SampledToken> step(const std::vector<Sequence*>& seqs, int chunk, at::Tensor* logits = nullptr) {
    std::vector<ScheduledChunk> batch;
    for (Sequence* seq : seqs) {
      const int n = std::min(chunk, seq->num_tokens() - seq->num_computed_tokens());
      const int end = seq->num_computed_tokens() + n;
      while (static_cast<int>(seq->block_table().size()) * runner_.block_size() < end) {
        seq->mutable_block_table().push_back(--next_block_);
      }
      batch.push_back({seq, n, end == seq->num_tokens()});
    }
    std::vector<SampledToken> out = runner_.execute(batch);
    if (logits != nullptr) *logits = runner_.last_logits().clone();
    for (const ScheduledChunk& c : batch) {
      const_cast<Sequence*>(c.seq)->set_num_computed_tokens(c.seq->num_computed_tokens() + c.num_tokens);
    }
    return out;
  }

 private:
  TorchModelRunner& runner_;
  int next_block_;
  std::vector<std::unique_ptr<Sequence>> seqs_;
};

// Draws from Torch's global generator: seed it first.
std::vector<int32_t> random_tokens(int n, int vocab) {
  const at::Tensor t = at::randint(3, vocab, {n}, at::TensorOptions().dtype(at::kInt));
  return std::vector<int32_t>(t.data_ptr<int32_t>(), t.data_ptr<int32_t>() + n);
}

// ---- tests ----------------------------------------------------------------------------

json family_config(const std::string& name) {
  if (name == "llama") return testing::tiny_config("LlamaForCausalLM");
  if (name == "qwen2") return testing::tiny_config("Qwen2ForCausalLM");
  if (name == "qwen3") return testing::tiny_config("Qwen3ForCausalLM");
  json config = testing::tiny_config("LlamaForCausalLM");  // "llama3": scaled RoPE, tied head
  config["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 16}};
  config["tie_word_embeddings"] = true;
  return config;
}

class Family : public ::testing::TestWithParam<std::string> {};

TEST_P(Family, ChunkedPrefillAndDecodeMatchTheReference) {
  TempDir dir;
  const json config = family_config(GetParam());
  const testing::NamedTensors weights = testing::write_tiny_model(dir.path(), config);
  TorchModelRunner runner(config_for(dir.path()));
  Driver driver(runner);
  at::manual_seed(1);
  const std::vector<int32_t> text = random_tokens(40, 97);
  const int prompt_len = 23;
  const at::Tensor expected = reference_logits(config, weights, text);

  Sequence& seq = driver.add({text.begin(), text.begin() + prompt_len});
  at::Tensor logits;
  while (seq.num_computed_tokens() < seq.num_tokens()) driver.step({&seq}, 5, &logits);
  // Then decode with the reference text forced in, checking every position.
  for (int pos = prompt_len - 1; pos < static_cast<int>(text.size()); ++pos) {
    if (pos >= prompt_len) {
      seq.append_token(text[pos]);
      driver.step({&seq}, 1, &logits);
    }
    ASSERT_EQ(logits.size(0), 1);
    const double diff = (logits[0].to(at::kDouble) - expected[pos]).abs().max().item<double>();
    EXPECT_LT(diff, 1e-4) << "position " << pos;
  }
}

TEST_P(Family, GreedyOutputDoesNotDependOnChunkingOrBatch) {
  TempDir dir;
  const json config = family_config(GetParam());
  testing::write_tiny_model(dir.path(), config);
  at::manual_seed(2);
  const std::vector<int32_t> prompt = random_tokens(19, 97);
  const std::vector<int32_t> other = random_tokens(30, 97);

  // Alone, whole prompt in one step.
  std::vector<int32_t> alone;
  {
    TorchModelRunner runner(config_for(dir.path()));
    Driver driver(runner);
    Sequence& seq = driver.add(prompt);
    for (int i = 0; i < 12; ++i) {
      const int32_t token = driver.step({&seq}, 1000)[0].token_id;
      alone.push_back(token);
      seq.append_token(token);
    }
  }
  // Chunked by 3, sharing every step with another sequence, block size 16.
  TorchModelRunner runner(config_for(dir.path(), 16));
  Driver driver(runner);
  Sequence& neighbour = driver.add(other);
  Sequence& seq = driver.add(prompt);
  std::vector<int32_t> batched;
  while (batched.size() < alone.size()) {
    const std::vector<SampledToken> out = driver.step({&neighbour, &seq}, 3);
    const bool neighbour_sampled = neighbour.num_computed_tokens() == neighbour.num_tokens();
    const bool seq_sampled = seq.num_computed_tokens() == seq.num_tokens();
    ASSERT_EQ(out.size(), static_cast<size_t>(neighbour_sampled + seq_sampled));
    if (neighbour_sampled) neighbour.append_token(out[0].token_id);
    if (seq_sampled) {
      batched.push_back(out.back().token_id);
      seq.append_token(out.back().token_id);
    }
  }
  EXPECT_EQ(batched, alone);
}

// Longer than the block of rows DecoderModel::mlp computes gate/up in (512), in one step.
TEST(TorchModelRunner, LongPrefillInOneStepMatchesTheReference) {
  TempDir dir;
  json config = family_config("qwen2");
  config["max_position_embeddings"] = 1024;
  const testing::NamedTensors weights = testing::write_tiny_model(dir.path(), config);
  TorchModelRunner runner(config_for(dir.path()));
  Driver driver(runner);
  at::manual_seed(3);
  const std::vector<int32_t> prompt = random_tokens(700, 97);
  Sequence& seq = driver.add(prompt);
  at::Tensor logits;
  driver.step({&seq}, 1000, &logits);
  const at::Tensor expected = reference_logits(config, weights, prompt);
  EXPECT_LT((logits[0].to(at::kDouble) - expected[699]).abs().max().item<double>(), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(TinyModels, Family, ::testing::Values("llama", "llama3", "qwen2", "qwen3"),
                         [](const auto& info) { return info.param; });

TEST(TorchModelRunner, MinTokensBansEosAndStopTokens) {
  TempDir dir;
  json config = family_config("qwen2");
  testing::write_tiny_model(dir.path(), config);
  at::manual_seed(4);
  const std::vector<int32_t> prompt = random_tokens(9, 97);
  // The two tokens greedy decoding would pick first, best and second best.
  int32_t first;
  int32_t second;
  {
    TorchModelRunner runner(config_for(dir.path()));
    Driver driver(runner);
    Sequence& seq = driver.add(prompt);
    at::Tensor logits;
    first = driver.step({&seq}, 100, &logits)[0].token_id;
    second = static_cast<int32_t>(std::get<1>(logits[0].topk(2))[1].item<int64_t>());
  }
  // Make the greedy pick the model's eos, and the runner-up a stop token.
  config["eos_token_id"] = first;
  testing::write_json(dir.path() / "config.json", config);
  TorchModelRunner runner(config_for(dir.path()));
  EXPECT_EQ(runner.model_info().eos_token_ids, std::vector<int32_t>{first});
  const auto first_token = [&](SamplingParams params) {
    Driver driver(runner);
    Sequence& seq = driver.add(prompt, params);
    return driver.step({&seq}, 100)[0].token_id;
  };
  SamplingParams params = greedy();
  EXPECT_EQ(first_token(params), first);
  params.min_tokens = 1;
  EXPECT_EQ(first_token(params), second);  // eos banned
  params.stop_token_ids = {second};
  const int32_t third = first_token(params);
  EXPECT_NE(third, first);
  EXPECT_NE(third, second);
  params.ignore_eos = true;  // eos is no stop, so it need not be banned
  EXPECT_EQ(first_token(params), first);
}

TEST(TorchModelRunner, Bfloat16StaysCloseToFloat32) {
  TempDir dir;
  json config = family_config("qwen3");
  config["dtype"] = "bfloat16";
  testing::write_tiny_model(dir.path(), config);
  at::manual_seed(5);
  const std::vector<int32_t> prompt = random_tokens(33, 97);
  const auto logits_for = [&](const std::string& dtype, at::ScalarType expected_dtype) {
    EngineConfig engine_config = config_for(dir.path());
    engine_config.dtype = dtype;
    TorchModelRunner runner(engine_config);
    EXPECT_EQ(runner.dtype(), expected_dtype);
    Driver driver(runner);
    Sequence& seq = driver.add(prompt);
    at::Tensor logits;
    driver.step({&seq}, 100, &logits);
    return logits;
  };
  const at::Tensor reference = logits_for("float32", at::kFloat);
  const at::Tensor bf16 = logits_for("auto", at::kBFloat16);  // the config's dtype
  EXPECT_LT((bf16 - reference).abs().max().item<double>(), 0.05 * reference.abs().max().item<double>());
}

TEST(TorchModelRunner, SizesTheKVCacheFromTheBudget) {
  TempDir dir;
  testing::write_tiny_model(dir.path(), family_config("llama"));
  EngineConfig config = config_for(dir.path(), 16);
  config.num_kvcache_blocks = -1;
  // 2 layers × K and V × 16 tokens × 2 kv heads × 16 dims × 4 bytes.
  const int64_t block_bytes = 2 * 2 * 16 * 2 * 16 * 4;
  config.kv_cache_memory = 10 * block_bytes + block_bytes / 2;
  EXPECT_EQ(TorchModelRunner(config).num_kvcache_blocks(), 10);

  // Never more than max_num_seqs full-length sequences can use: 2 × ceil(40 / 16).
  config.kv_cache_memory = 0;
  config.max_num_seqs = 2;
  config.max_model_len = 40;
  EXPECT_EQ(TorchModelRunner(config).num_kvcache_blocks(), 6);

  config.kv_cache_memory = block_bytes - 1;
  EXPECT_THROW(TorchModelRunner runner(config), std::invalid_argument);
}

TEST(TorchModelRunner, ExplainsWhatIsWrongWithTheSetup) {
  TempDir dir;
  const auto create = [&](EngineConfig config) { return create_torch_model_runner(config); };
  expect_error([&] { create(config_for(dir.path() / "nope")); }, {"does not exist", "nope"});
  expect_error([&] { create(config_for(dir.path())); }, {"config.json"});

  json config = family_config("llama");
  testing::write_json(dir.path() / "config.json", config);
  expect_error([&] { create(config_for(dir.path())); }, {"no *.safetensors"});

  testing::NamedTensors weights = testing::tiny_weights(config, 0);
  testing::write_safetensors(dir.path() / "model.safetensors", weights);
  config["architectures"] = {"GPTNeoXForCausalLM"};
  testing::write_json(dir.path() / "config.json", config);
  expect_error([&] { create(config_for(dir.path())); }, {"GPTNeoXForCausalLM", "LlamaForCausalLM"});

  config = family_config("llama");
  testing::write_json(dir.path() / "config.json", config);
  testing::NamedTensors missing = weights;
  missing.erase(missing.begin() + 5);
  testing::write_safetensors(dir.path() / "model.safetensors", missing);
  expect_error([&] { create(config_for(dir.path())); }, {weights[5].first, "model.safetensors"});

  testing::NamedTensors reshaped = weights;
  reshaped[5].second = at::zeros({3, 3});
  testing::write_safetensors(dir.path() / "model.safetensors", reshaped);
  expect_error([&] { create(config_for(dir.path())); }, {weights[5].first, "[3, 3]", "expected"});

  testing::write_safetensors(dir.path() / "model.safetensors", weights);
  EngineConfig engine_config = config_for(dir.path());
  engine_config.device = "cuda";
  expect_error([&] { create(engine_config); }, {"cuda", "cpu"});
  engine_config = config_for(dir.path());
  engine_config.dtype = "float64";
  expect_error([&] { create(engine_config); }, {"dtype", "float64"});
}

}  // namespace
}  // namespace nanovllm
