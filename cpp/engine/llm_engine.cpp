#include "nanovllm/llm_engine.h"

#include <algorithm>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>

#include "block_manager.h"
#include "scheduler.h"
#include "validation.h"

namespace nanovllm {

namespace {

bool contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::ranges::find(ids, id) != ids.end();
}

// Why the sequence must stop after the token it just sampled, if it must.
FinishReason stop_reason(const Sequence& seq, const ModelInfo& model_info, int max_model_len) {
  const SamplingParams& params = seq.params();
  const int32_t token = seq.last_token_id();
  // Below min_tokens the sampler bans eos and stop ids; they must not end the request
  // either way.
  if (seq.num_output_tokens() >= params.min_tokens) {
    if (!params.ignore_eos && contains(model_info.eos_token_ids, token)) {
      return FinishReason::kStop;
    }
    if (contains(params.stop_token_ids, token)) return FinishReason::kStop;
  }
  // add_request keeps prompt + max_tokens within max_model_len; the second test guards the
  // model's positions all the same.
  if (seq.num_output_tokens() >= params.max_tokens || seq.num_tokens() >= max_model_len) {
    return FinishReason::kLength;
  }
  return FinishReason::kNone;
}

}  // namespace

LLMEngine::LLMEngine(EngineConfig config, std::unique_ptr<ModelRunner> runner)
    : config_(std::move(config)), runner_(std::move(runner)) {
  config_.validate();
  if (!runner_) throw std::invalid_argument("LLMEngine needs a model runner, got none");
  model_info_ = runner_->model_info();

  if (runner_->block_size() != config_.kvcache_block_size) {
    detail::reject("kvcache_block_size", config_.kvcache_block_size,
                   "the model runner's KV cache has blocks of " +
                       std::to_string(runner_->block_size()) + " tokens");
  }
  const int num_blocks = runner_->num_kvcache_blocks();
  if (num_blocks < 1) {
    throw std::runtime_error("the model runner allocated " + std::to_string(num_blocks) +
                             " KV cache blocks; the engine needs at least one");
  }
  config_.num_kvcache_blocks = num_blocks;

  const int model_limit = model_info_.max_position_embeddings;
  if (config_.max_model_len == 0) {
    if (model_limit < 1) {
      throw std::invalid_argument(
          "max_model_len = 0 asks for the model's own limit, but the model does not state "
          "max_position_embeddings; set max_model_len explicitly");
    }
    config_.max_model_len = model_limit;
  } else if (model_limit > 0 && config_.max_model_len > model_limit) {
    detail::reject("max_model_len", config_.max_model_len,
                   "the model supports at most " + std::to_string(model_limit) +
                       " positions (max_position_embeddings)");
  }

  // Requests without a seed must differ from run to run, as with any sampling API.
  seed_generator_.seed(std::random_device{}());
  scheduler_ = std::make_unique<Scheduler>(
      config_.max_num_seqs, config_.max_num_batched_tokens,
      BlockManager(num_blocks, config_.kvcache_block_size, config_.enable_prefix_caching));
}

LLMEngine::~LLMEngine() = default;

const Scheduler& LLMEngine::scheduler() const { return *scheduler_; }

int64_t LLMEngine::add_request(std::vector<int32_t> prompt_token_ids,
                               const SamplingParams& params) {
  params.validate();
  if (prompt_token_ids.empty()) {
    throw std::invalid_argument("the prompt is empty: a request needs at least one token");
  }
  if (model_info_.vocab_size > 0) {
    for (size_t i = 0; i < prompt_token_ids.size(); ++i) {
      const int32_t id = prompt_token_ids[i];
      if (id < 0 || id >= model_info_.vocab_size) {
        throw std::invalid_argument("prompt token id " + std::to_string(id) + " at position " +
                                    std::to_string(i) + " is outside the vocabulary [0, " +
                                    std::to_string(model_info_.vocab_size) + ")");
      }
    }
  }

  const int64_t num_prompt_tokens = static_cast<int64_t>(prompt_token_ids.size());
  const std::string lengths = "prompt has " + std::to_string(num_prompt_tokens) +
                              " tokens, max_tokens " + std::to_string(params.max_tokens);
  if (num_prompt_tokens + params.max_tokens > config_.max_model_len) {
    throw std::invalid_argument("request is too long: " + lengths + ", max_model_len " +
                                std::to_string(config_.max_model_len) +
                                " (prompt tokens + max_tokens must be <= max_model_len)");
  }
  // The last sampled token is never fed back, so it needs no slot.
  const int block_size = config_.kvcache_block_size;
  const int64_t num_slots = num_prompt_tokens + params.max_tokens - 1;
  const int64_t num_blocks_needed = (num_slots + block_size - 1) / block_size;
  if (num_blocks_needed > config_.num_kvcache_blocks) {
    throw std::invalid_argument(
        "request needs " + std::to_string(num_blocks_needed) + " KV cache blocks (" + lengths +
        ", block size " + std::to_string(block_size) + ") but the whole cache has " +
        std::to_string(config_.num_kvcache_blocks) +
        "; lower max_tokens or give the KV cache more memory");
  }

  const uint64_t seed = params.seed.value_or(seed_generator_());
  const int64_t id = next_request_id_++;
  auto seq = std::make_unique<Sequence>(id, std::move(prompt_token_ids), params, seed);
  scheduler_->add(*seq);
  sequences_.emplace(id, std::move(seq));
  return id;
}

std::vector<RequestOutput> LLMEngine::step() {
  std::vector<RequestOutput> outputs = std::move(pending_aborts_);
  pending_aborts_.clear();
  const std::vector<ScheduledChunk> batch = scheduler_->schedule();
  if (batch.empty()) return outputs;

  std::vector<SampledToken> sampled = runner_->execute(batch);
  const auto num_samples = std::ranges::count_if(batch, &ScheduledChunk::sample);
  if (std::cmp_not_equal(sampled.size(), num_samples)) {
    throw std::runtime_error("the model runner returned " + std::to_string(sampled.size()) +
                             " sampled tokens for a batch that samples " +
                             std::to_string(num_samples));
  }
  ++counters_.num_steps;
  outputs.reserve(outputs.size() + sampled.size());

  auto sample = sampled.begin();
  for (const ScheduledChunk& chunk : batch) {
    // The engine owns every sequence; chunks carry const pointers only for the runner.
    Sequence& seq = const_cast<Sequence&>(*chunk.seq);
    const int first = seq.num_computed_tokens();
    counters_.prompt_tokens_total +=
        std::max(0, std::min(first + chunk.num_tokens, seq.num_prompt_tokens()) - first);
    scheduler_->advance(seq, chunk.num_tokens);
    if (!chunk.sample) continue;

    SampledToken& token = *sample++;
    if (token.token_id < 0 ||
        (model_info_.vocab_size > 0 && token.token_id >= model_info_.vocab_size)) {
      throw std::runtime_error("the model runner sampled token id " +
                               std::to_string(token.token_id) + ", outside the vocabulary [0, " +
                               std::to_string(model_info_.vocab_size) + ")");
    }
    seq.append_token(token.token_id);
    ++counters_.generation_tokens_total;

    const SamplingParams& params = seq.params();
    RequestOutput& output = outputs.emplace_back();
    output.request_id = seq.id();
    output.new_token_ids.push_back(token.token_id);
    if (params.logprobs >= 0) output.new_logprobs.push_back(token.logprob);
    if (params.logprobs > 0) output.new_top_logprobs.push_back(std::move(token.top_logprobs));
    output.num_prompt_tokens = seq.num_prompt_tokens();
    // A preempted request is recomputed with its outputs; only its prompt counts here.
    output.num_cached_tokens = std::min(seq.num_cached_tokens(), seq.num_prompt_tokens());

    const FinishReason reason = stop_reason(seq, model_info_, config_.max_model_len);
    if (reason != FinishReason::kNone) {
      output.finished = true;
      output.finish_reason = reason;
      scheduler_->finish(seq, reason);
      sequences_.erase(seq.id());
    }
  }
  return outputs;
}

bool LLMEngine::abort(int64_t request_id) {
  const auto found = sequences_.find(request_id);
  if (found == sequences_.end()) return false;
  Sequence& seq = *found->second;
  scheduler_->finish(seq, FinishReason::kAbort);
  RequestOutput& output = pending_aborts_.emplace_back();
  output.request_id = request_id;
  output.finished = true;
  output.finish_reason = FinishReason::kAbort;
  output.num_prompt_tokens = seq.num_prompt_tokens();
  output.num_cached_tokens = std::min(seq.num_cached_tokens(), seq.num_prompt_tokens());
  sequences_.erase(found);
  return true;
}

bool LLMEngine::has_unfinished() const {
  // An aborted request is unfinished until step() has reported it.
  return !sequences_.empty() || !pending_aborts_.empty();
}

EngineStats LLMEngine::stats() const {
  EngineStats stats = counters_;
  const BlockManager& blocks = scheduler_->block_manager();
  stats.num_running = static_cast<int>(scheduler_->running().size());
  stats.num_waiting = static_cast<int>(scheduler_->waiting().size());
  stats.num_kvcache_blocks = blocks.num_blocks();
  stats.num_free_blocks = blocks.num_free_blocks();
  stats.kv_cache_usage = static_cast<double>(blocks.num_used_blocks()) / blocks.num_blocks();
  stats.prefix_cache_queries = blocks.num_queried_tokens();
  stats.prefix_cache_hits = blocks.num_hit_tokens();
  stats.num_preemptions = scheduler_->num_preemptions();
  return stats;
}

}  // namespace nanovllm
