#include "testing/fake_model_runner.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace nanovllm::testing {

namespace {

uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

uint64_t chain(uint64_t hash, int32_t token) {
  return mix64(hash + 0x9e3779b97f4a7c15ULL + static_cast<uint32_t>(token));
}

bool contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::ranges::find(ids, id) != ids.end();
}

[[noreturn]] void fail(const Sequence& seq, const std::string& what) {
  throw std::logic_error("fake model runner: request " + std::to_string(seq.id()) + ": " + what);
}

}  // namespace

FakeModelRunner::FakeModelRunner(FakeModelRunnerOptions options, TokenFn token_fn)
    : options_(std::move(options)), token_fn_(std::move(token_fn)) {
  if (options_.num_blocks < 1 || options_.block_size < 1 || options_.vocab_size < 1) {
    throw std::invalid_argument(
        "fake model runner: num_blocks, block_size and vocab_size must be >= 1");
  }
  if (options_.check_kv) {
    const size_t num_slots = static_cast<size_t>(options_.num_blocks) * options_.block_size;
    kv_.assign(num_slots, 0);
    kv_writer_.assign(num_slots, -1);
  }
}

ModelInfo FakeModelRunner::model_info() const {
  return {options_.vocab_size, options_.max_position_embeddings, options_.eos_token_ids};
}

std::vector<SampledToken> FakeModelRunner::execute(const std::vector<ScheduledChunk>& batch) {
  ++num_executions_;
  last_batch_.clear();
  std::vector<SampledToken> sampled;
  for (const ScheduledChunk& chunk : batch) {
    const Sequence& seq = *chunk.seq;
    const int first = seq.num_computed_tokens();
    const int end = first + chunk.num_tokens;
    if (chunk.num_tokens < 1 || end > seq.num_tokens()) {
      fail(seq, "chunk [" + std::to_string(first) + ", " + std::to_string(end) +
                    ") is empty or runs past its " + std::to_string(seq.num_tokens()) + " tokens");
    }
    if (chunk.sample != (end == seq.num_tokens())) {
      fail(seq, "a chunk samples exactly when it ends at the last token");
    }
    const std::vector<int32_t>& table = seq.block_table();
    if (static_cast<int64_t>(table.size()) * options_.block_size < end) {
      fail(seq, "block table covers " + std::to_string(table.size() * options_.block_size) +
                    " positions, the chunk needs " + std::to_string(end));
    }
    for (int32_t block : table) {
      if (block < 0 || block >= options_.num_blocks) {
        fail(seq, "block id " + std::to_string(block) + " is outside the cache");
      }
    }
    last_batch_.push_back({seq.id(), first, chunk.num_tokens, chunk.sample});
    num_computed_tokens_ += chunk.num_tokens;
    if (options_.check_kv) check_and_write_kv(seq, first, end);
    if (!chunk.sample) continue;

    SampledToken& token = sampled.emplace_back();
    token.token_id = token_fn_ ? token_fn_(seq)
                               : next_token(seq.token_ids(), seq.num_prompt_tokens(),
                                            seq.params(), seq.seed());
    const int num_logprobs = seq.params().logprobs;
    token.logprob = num_logprobs >= 0 ? -static_cast<float>(token.token_id % 97) / 16.0f : 0.0f;
    for (int i = 0; i < num_logprobs; ++i) {
      token.top_logprobs.push_back({(token.token_id + i) % options_.vocab_size,
                                    token.logprob - static_cast<float>(i)});
    }
  }
  return sampled;
}

void FakeModelRunner::check_and_write_kv(const Sequence& seq, int first, int end) {
  const std::vector<int32_t>& tokens = seq.token_ids();
  const std::vector<int32_t>& table = seq.block_table();
  const int block_size = options_.block_size;
  uint64_t prefix = 0;
  for (int position = 0; position < end; ++position) {
    prefix = chain(prefix, tokens[position]);
    const int32_t block = table[position / block_size];
    const size_t slot = static_cast<size_t>(block) * block_size + position % block_size;
    if (position < first) {
      if (kv_[slot] != prefix) {
        fail(seq, "reads position " + std::to_string(position) + " from block " +
                      std::to_string(block) + ", which holds the K/V of another prefix");
      }
    } else {
      if (kv_writer_[slot] == num_executions_) {
        fail(seq, "writes block " + std::to_string(block) +
                      ", which another chunk of this step writes too");
      }
      kv_[slot] = prefix;
      kv_writer_[slot] = num_executions_;
    }
  }
}

int32_t FakeModelRunner::next_token(std::span<const int32_t> token_ids, int num_prompt_tokens,
                                    const SamplingParams& params, uint64_t seed) const {
  uint64_t hash = mix64(seed ^ 0x243f6a8885a308d3ULL);
  for (int32_t token : token_ids) hash = chain(hash, token);
  const int output_index = static_cast<int>(token_ids.size()) - num_prompt_tokens;
  hash = mix64(hash + static_cast<uint64_t>(output_index));
  int32_t token = static_cast<int32_t>(hash % static_cast<uint64_t>(options_.vocab_size));
  if (output_index < params.min_tokens) {
    const auto banned = [&](int32_t id) {
      return (!params.ignore_eos && contains(options_.eos_token_ids, id)) ||
             contains(params.stop_token_ids, id);
    };
    for (int tries = 0; banned(token); ++tries) {
      if (tries == options_.vocab_size) {
        throw std::logic_error("fake model runner: min_tokens bans every token of the vocabulary");
      }
      token = (token + 1) % options_.vocab_size;
    }
  }
  return token;
}

}  // namespace nanovllm::testing
