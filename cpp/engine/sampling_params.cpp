#include "nanovllm/sampling_params.h"

#include <cmath>

#include "validation.h"

namespace nanovllm {

using detail::reject;

void SamplingParams::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    reject("temperature", temperature, "must be >= 0 (0 = greedy)");
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) reject("top_p", top_p, "must be in (0, 1]");
  if (top_k < -1) reject("top_k", top_k, "must be >= 1, or -1 / 0 to disable");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) reject("min_p", min_p, "must be in [0, 1]");
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) {
    reject("repetition_penalty", repetition_penalty, "must be > 0 (1 = no penalty)");
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) {
    reject("presence_penalty", presence_penalty, "must be in [-2, 2]");
  }
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    reject("frequency_penalty", frequency_penalty, "must be in [-2, 2]");
  }
  if (max_tokens < 1) reject("max_tokens", max_tokens, "must be >= 1");
  if (min_tokens < 0) reject("min_tokens", min_tokens, "must be >= 0");
  if (min_tokens > max_tokens) {
    reject("min_tokens", min_tokens, "must be <= max_tokens (" + std::to_string(max_tokens) + ")");
  }
  for (int32_t id : stop_token_ids) {
    if (id < 0) reject("stop_token_ids", id, "token ids must be >= 0");
  }
  if (logprobs < -1 || logprobs > 20) {
    reject("logprobs", logprobs, "must be between 0 and 20, or -1 for none");
  }
}

}  // namespace nanovllm
