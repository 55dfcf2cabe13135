#include "torch_model_runner.h"

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <string>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include "model_family.h"
#include "nanovllm/torch_model_runner.h"
#include "safetensors.h"
#include "step_profiler.h"

namespace nanovllm {
namespace {

namespace fs = std::filesystem;

// `requested` has passed EngineConfig::validate(): "auto" or one of the three names.
at::ScalarType resolve_dtype(const std::string& requested, const std::string& checkpoint) {
  // A config that names no dtype means float32, as in transformers.
  const std::string name =
      requested != "auto" ? requested : (checkpoint.empty() ? "float32" : checkpoint);
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  throw std::invalid_argument("dtype \"auto\": config.json's dtype \"" + checkpoint +
                              "\" is not supported; pass dtype \"float32\", \"bfloat16\" or "
                              "\"float16\"");
}

void check_device(const std::string& device) {
  if (device == "cpu") return;
  if (!at::hasCUDA()) {
    throw std::invalid_argument("device \"" + device +
                                "\": this libnanovllm was built against a Torch without CUDA; "
                                "use device \"cpu\"");
  }
  throw std::invalid_argument("device \"" + device +
                              "\": the LibTorch model runner runs on the CPU only for now; use "
                              "device \"cpu\"");
}

// Closes the profiled step however execute() leaves.
struct StepEnd {
  ~StepEnd() { profile::end_step(); }
};

}  // namespace

TorchModelRunner::TorchModelRunner(const EngineConfig& config) {
  config.validate();
  check_device(config.device);
  const fs::path dir = config.model;
  if (dir.empty() || !fs::exists(dir)) {
    throw std::runtime_error("model folder \"" + config.model + "\" does not exist");
  }
  if (!fs::is_directory(dir)) {
    throw std::runtime_error("model \"" + config.model +
                             "\" is not a folder (expected a Hugging Face model folder)");
  }
  if (config.num_threads > 0) at::set_num_threads(config.num_threads);

  model_config_ = load_model_config(dir);
  const ModelFamily& family = find_model_family(model_config_);
  const DecoderTraits traits = family.traits(model_config_);
  dtype_ = resolve_dtype(config.dtype, model_config_.torch_dtype);
  const int max_model_len =
      config.max_model_len > 0 ? config.max_model_len : model_config_.max_position_embeddings;

  // Sized before the weights load, so that a budget too small fails fast.
  const KVCacheShape cache_shape{model_config_.num_hidden_layers, config.kvcache_block_size,
                                 model_config_.num_key_value_heads, model_config_.head_dim, dtype_};
  const int num_blocks = plan_num_kvcache_blocks(config, cache_shape, max_model_len);

  c10::InferenceMode inference;
  {
    // The mapping is released once the weights are copied into the model.
    const SafetensorsWeights weights(dir);
    model_ = std::make_unique<DecoderModel>(
        model_config_, traits, weights, dtype_,
        std::max(max_model_len, model_config_.max_position_embeddings),
        // validate() allows "" or "int8".
        config.quantization == "int8" ? Quantization::kInt8 : Quantization::kNone);
  }
  kv_cache_ = std::make_unique<KVCache>(cache_shape, num_blocks);
}

ModelInfo TorchModelRunner::model_info() const {
  ModelInfo info;
  info.vocab_size = model_config_.vocab_size;
  info.max_position_embeddings = model_config_.max_position_embeddings;
  info.eos_token_ids = model_config_.eos_token_ids;
  return info;
}

std::vector<SampledToken> TorchModelRunner::execute(const std::vector<ScheduledChunk>& batch) {
  if (batch.empty()) return {};
  c10::InferenceMode inference;
  if (profile::enabled()) {
    int num_tokens = 0;
    for (const ScheduledChunk& chunk : batch) num_tokens += chunk.num_tokens;
    profile::begin_step(static_cast<int>(batch.size()), num_tokens);
  }
  const StepEnd step_end;
  {
    profile::Scope scope(profile::Phase::kInputs);
    inputs_.build(batch, block_size());
  }
  last_logits_ = model_->forward(inputs_, *kv_cache_);

  rows_.clear();
  for (const ScheduledChunk& chunk : batch) {
    if (!chunk.sample) continue;
    const Sequence& seq = *chunk.seq;
    const SamplingParams& params = seq.params();
    SamplingRow row{&params, seq.seed(), seq.num_output_tokens(), &seq.token_ids(),
                    seq.num_prompt_tokens(), {}};
    // Below min_tokens the sequence must not stop: forbid its stop tokens (and eos, which
    // would stop it unless ignore_eos).
    if (seq.num_output_tokens() < params.min_tokens) {
      row.banned_token_ids = params.stop_token_ids;
      if (!params.ignore_eos) {
        row.banned_token_ids.insert(row.banned_token_ids.end(), model_config_.eos_token_ids.begin(),
                                    model_config_.eos_token_ids.end());
      }
    }
    rows_.push_back(std::move(row));
  }
  if (rows_.empty()) return {};
  profile::Scope scope(profile::Phase::kSampling);
  return sample(last_logits_, rows_);
}

std::unique_ptr<ModelRunner> create_torch_model_runner(const EngineConfig& config) {
  return std::make_unique<TorchModelRunner>(config);
}

}  // namespace nanovllm
