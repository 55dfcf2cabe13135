// Per-request sampling parameters, with vLLM's names and meanings. Validated once, here.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace nanovllm {

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy
  float top_p = 1.0f;               // (0, 1]
  int top_k = -1;                   // -1 or 0 = disabled
  float min_p = 0.0f;               // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; 1 = off (applies to prompt and output tokens)
  float presence_penalty = 0.0f;    // [-2, 2]
  float frequency_penalty = 0.0f;   // [-2, 2]
  // Makes sampling reproducible whatever else is in the batch. Unset: the engine draws
  // one per request.
  std::optional<uint64_t> seed;
  int max_tokens = 16;  // >= 1
  int min_tokens = 0;   // eos and stop token ids are suppressed until this many tokens
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  // -1: no logprobs; 0: the sampled token's logprob; N > 0: also the top N.
  int logprobs = -1;

  bool greedy() const { return temperature == 0.0f; }

  // Throws std::invalid_argument naming the field, the value and what is allowed.
  void validate() const;
};

}  // namespace nanovllm
