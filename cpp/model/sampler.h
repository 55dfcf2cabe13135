// Sampling in C++: logits in, one token (and its logprobs) per row out.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "nanovllm/model_runner.h"
#include "nanovllm/sampling_params.h"

namespace nanovllm {

// Everything the sampler needs to know about one row of logits.
struct SamplingRow {
  const SamplingParams* params;
  // Reproducibility: the random draw for this row depends only on (seed, output_index),
  // so a seeded request samples the same tokens whatever else shares its batch.
  uint64_t seed;
  int output_index;  // how many tokens the sequence has generated so far
  // Prompt + output tokens so far (repetition penalty uses both; presence and frequency
  // penalties use the output tokens only, i.e. token_ids[num_prompt_tokens:]).
  const std::vector<int32_t>* token_ids;
  int num_prompt_tokens;
  // Token ids to forbid for this step (eos / stop ids while below min_tokens).
  std::vector<int32_t> banned_token_ids;
};

// logits: [rows.size(), vocab] on any device, any floating dtype. Returns one SampledToken
// per row, in order. Greedy rows (temperature 0) take the argmax (lowest id on ties).
std::vector<SampledToken> sample(const at::Tensor& logits, const std::vector<SamplingRow>& rows);

}  // namespace nanovllm
