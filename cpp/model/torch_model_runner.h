// The LibTorch ModelRunner (created through nanovllm/torch_model_runner.h). Declared here,
// apart from the public factory, so that tests can reach the logits of the last step.
#pragma once

#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "decoder_model.h"
#include "input_batch.h"
#include "kv_cache.h"
#include "model_config.h"
#include "nanovllm/config.h"
#include "nanovllm/model_runner.h"
#include "sampler.h"

namespace nanovllm {

class TorchModelRunner final : public ModelRunner {
 public:
  explicit TorchModelRunner(const EngineConfig& config);

  std::vector<SampledToken> execute(const std::vector<ScheduledChunk>& batch) override;
  int num_kvcache_blocks() const override { return kv_cache_->num_blocks(); }
  int block_size() const override { return kv_cache_->block_size(); }
  ModelInfo model_info() const override;

  // Float32 logits [sampled chunks, vocab] of the last execute(), for comparing with a
  // reference implementation; overwritten by the next execute().
  const at::Tensor& last_logits() const { return last_logits_; }
  at::ScalarType dtype() const { return dtype_; }

 private:
  ModelConfig model_config_;
  at::ScalarType dtype_;
  std::unique_ptr<DecoderModel> model_;
  std::unique_ptr<KVCache> kv_cache_;
  InputBatch inputs_;
  std::vector<SamplingRow> rows_;
  at::Tensor last_logits_;
};

}  // namespace nanovllm
