// A request as the engine sees it: plain data (token ids, block ids, counters), no Torch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nanovllm/sampling_params.h"

namespace nanovllm {

enum class SequenceStatus { kWaiting, kRunning, kFinished };

enum class FinishReason {
  kNone,    // still running
  kStop,    // eos or a stop token id (stop strings are matched in Python, which aborts
            // the request and reports "stop" itself)
  kLength,  // max_tokens or max_model_len reached
  kAbort,   // aborted by the caller
};

// "stop", "length", "abort" or "" (vLLM's and OpenAI's spelling).
const char* to_string(FinishReason reason);

struct TokenLogprob {
  int32_t token_id;
  float logprob;
};

class Sequence {
 public:
  Sequence(int64_t id, std::vector<int32_t> prompt_token_ids, SamplingParams params,
           uint64_t seed);

  int64_t id() const { return id_; }
  SequenceStatus status() const { return status_; }
  FinishReason finish_reason() const { return finish_reason_; }
  const SamplingParams& params() const { return params_; }
  // The seed this request samples with: params().seed, or one the engine drew.
  uint64_t seed() const { return seed_; }

  // Prompt followed by every generated token.
  const std::vector<int32_t>& token_ids() const { return token_ids_; }
  int num_tokens() const { return static_cast<int>(token_ids_.size()); }
  int num_prompt_tokens() const { return num_prompt_tokens_; }
  int num_output_tokens() const { return num_tokens() - num_prompt_tokens_; }
  int32_t last_token_id() const { return token_ids_.back(); }

  // Tokens whose K/V are in the cache (computed, or served by the prefix cache).
  int num_computed_tokens() const { return num_computed_tokens_; }
  // Of those, how many the prefix cache served at the last admission.
  int num_cached_tokens() const { return num_cached_tokens_; }
  // KV block ids, in position order.
  const std::vector<int32_t>& block_table() const { return block_table_; }
  // How many times this sequence was preempted (and recomputed).
  int num_preemptions() const { return num_preemptions_; }

  // Mutators, for the engine (scheduler, block manager, step loop).
  void set_status(SequenceStatus status) { status_ = status; }
  void finish(FinishReason reason);
  void append_token(int32_t token_id) { token_ids_.push_back(token_id); }
  void set_num_computed_tokens(int n) { num_computed_tokens_ = n; }
  void set_num_cached_tokens(int n) { num_cached_tokens_ = n; }
  std::vector<int32_t>& mutable_block_table() { return block_table_; }
  void count_preemption() { ++num_preemptions_; }

 private:
  int64_t id_;
  SequenceStatus status_ = SequenceStatus::kWaiting;
  FinishReason finish_reason_ = FinishReason::kNone;
  std::vector<int32_t> token_ids_;
  int num_prompt_tokens_;
  int num_computed_tokens_ = 0;
  int num_cached_tokens_ = 0;
  std::vector<int32_t> block_table_;
  SamplingParams params_;
  uint64_t seed_;
  int num_preemptions_ = 0;
};

}  // namespace nanovllm
