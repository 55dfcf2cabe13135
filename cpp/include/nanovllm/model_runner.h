// The boundary between the engine (no Torch) and whatever computes the model.
#pragma once

#include <cstdint>
#include <vector>

#include "nanovllm/sequence.h"

namespace nanovllm {

// One sequence's share of an engine step: compute K/V for token positions
// [seq->num_computed_tokens(), seq->num_computed_tokens() + num_tokens) and, when
// `sample` is set (the chunk ends at the sequence's last token), sample its next token.
struct ScheduledChunk {
  const Sequence* seq;
  int num_tokens;
  bool sample;
};

struct SampledToken {
  int32_t token_id;
  float logprob;  // log-softmax of the raw logits at token_id (vLLM's default); 0 if not asked
  std::vector<TokenLogprob> top_logprobs;  // params().logprobs entries when > 0
};

// What the engine needs to know about the model it drives.
struct ModelInfo {
  int vocab_size = 0;
  int max_position_embeddings = 0;
  std::vector<int32_t> eos_token_ids;
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  // Runs one step. Block tables already cover every position being computed. Returns one
  // SampledToken per chunk with sample == true, in batch order. The sample of a sequence
  // must depend only on that sequence (its tokens, params, seed and output position),
  // never on the rest of the batch.
  virtual std::vector<SampledToken> execute(const std::vector<ScheduledChunk>& batch) = 0;

  // Size of the KV cache this runner allocated, in blocks of block_size() tokens.
  virtual int num_kvcache_blocks() const = 0;
  virtual int block_size() const = 0;
  virtual ModelInfo model_info() const = 0;
};

}  // namespace nanovllm
