// The engine step loop: requests in, tokens out. Single-threaded; see engine_loop.h for
// the thread-safe front end that serves concurrent clients.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <unordered_map>
#include <vector>

#include "nanovllm/config.h"
#include "nanovllm/model_runner.h"
#include "nanovllm/sampling_params.h"
#include "nanovllm/sequence.h"

namespace nanovllm {

class Scheduler;

// What one step produced for one request.
struct RequestOutput {
  int64_t request_id = 0;
  std::vector<int32_t> new_token_ids;
  std::vector<float> new_logprobs;                       // when params().logprobs >= 0
  std::vector<std::vector<TokenLogprob>> new_top_logprobs;  // when params().logprobs > 0
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  int num_prompt_tokens = 0;
  int num_cached_tokens = 0;  // prompt tokens served by the prefix cache (latest admission)
};

struct EngineStats {
  int num_running = 0;
  int num_waiting = 0;
  int num_kvcache_blocks = 0;
  int num_free_blocks = 0;
  double kv_cache_usage = 0.0;        // used / total blocks
  int64_t prefix_cache_queries = 0;   // prompt tokens looked up in the prefix cache
  int64_t prefix_cache_hits = 0;      // of those, served from it
  int64_t num_preemptions = 0;
  int64_t prompt_tokens_total = 0;      // prompt tokens computed (not served by the cache)
  int64_t generation_tokens_total = 0;  // tokens sampled
  int64_t num_steps = 0;                // steps that ran the model
};

class LLMEngine {
 public:
  // Validates the config against the runner (block size, cache size, model limits).
  LLMEngine(EngineConfig config, std::unique_ptr<ModelRunner> runner);
  ~LLMEngine();
  LLMEngine(const LLMEngine&) = delete;
  LLMEngine& operator=(const LLMEngine&) = delete;

  // Queues a request and returns its id. Throws std::invalid_argument when the params
  // are invalid, the prompt is empty, or the request could never fit (prompt + max_tokens
  // over max_model_len, or more blocks than the whole cache) — nothing is queued then.
  int64_t add_request(std::vector<int32_t> prompt_token_ids, const SamplingParams& params);

  // Runs one scheduler + model step. Returns an output for every request that got a new
  // token or finished (aborted ones included) in this step.
  std::vector<RequestOutput> step();

  // Finishes the request with reason "abort" and frees its blocks. Its final output is
  // reported by the next step(). Unknown or finished ids are ignored (returns false).
  bool abort(int64_t request_id);

  // True while a request is queued, running, or aborted but not yet reported by step().
  bool has_unfinished() const;
  EngineStats stats() const;
  // As given, with max_model_len and num_kvcache_blocks resolved to the values in use.
  const EngineConfig& config() const { return config_; }
  const ModelInfo& model_info() const { return model_info_; }
  int max_model_len() const { return config_.max_model_len; }

  // The scheduler and block manager behind this engine, for tests and tools that check
  // their invariants (include the engine's private scheduler.h to use it).
  const Scheduler& scheduler() const;

 private:
  EngineConfig config_;
  std::unique_ptr<ModelRunner> runner_;
  ModelInfo model_info_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unordered_map<int64_t, std::unique_ptr<Sequence>> sequences_;
  std::vector<RequestOutput> pending_aborts_;
  int64_t next_request_id_ = 0;
  std::mt19937_64 seed_generator_;
  EngineStats counters_;
};

}  // namespace nanovllm
