#include "nanovllm/sequence.h"

#include <utility>

namespace nanovllm {

const char* to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kNone: break;
  }
  return "";
}

Sequence::Sequence(int64_t id, std::vector<int32_t> prompt_token_ids, SamplingParams params,
                   uint64_t seed)
    : id_(id),
      token_ids_(std::move(prompt_token_ids)),
      num_prompt_tokens_(static_cast<int>(token_ids_.size())),
      params_(std::move(params)),
      seed_(seed) {}

void Sequence::finish(FinishReason reason) {
  status_ = SequenceStatus::kFinished;
  finish_reason_ = reason;
}

}  // namespace nanovllm
