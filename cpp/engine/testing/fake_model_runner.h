// A deterministic stand-in for the model, for the engine's tests and benchmarks. It is
// not part of libnanovllm.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "nanovllm/model_runner.h"
#include "nanovllm/sequence.h"

namespace nanovllm::testing {

struct FakeModelRunnerOptions {
  int num_blocks = 64;
  int block_size = 16;
  int vocab_size = 1000;
  int max_position_embeddings = 4096;
  std::vector<int32_t> eos_token_ids;
  // Keep a shadow KV cache and check every slot a chunk reads; costs O(context) per chunk.
  bool check_kv = true;
};

// What the fake saw of one chunk, in batch order.
struct ChunkRecord {
  int64_t request_id;
  int first_position;  // the sequence's num_computed_tokens() when scheduled
  int num_tokens;
  bool sample;
};

// Samples a token that is a pure function of the sequence's tokens so far, its seed and
// its output index, so outputs never depend on batching, chunking, caching or preemption.
// Throws std::logic_error when a chunk is malformed: positions outside the sequence, a
// block table that does not cover them, or (with check_kv) a slot that does not hold the
// K/V of this sequence's prefix at that position.
class FakeModelRunner : public ModelRunner {
 public:
  // Replaces the sampling rule, bans included, so a test can script the tokens.
  using TokenFn = std::function<int32_t(const Sequence& seq)>;

  explicit FakeModelRunner(FakeModelRunnerOptions options, TokenFn token_fn = {});

  std::vector<SampledToken> execute(const std::vector<ScheduledChunk>& batch) override;
  int num_kvcache_blocks() const override { return options_.num_blocks; }
  int block_size() const override { return options_.block_size; }
  ModelInfo model_info() const override;

  // The default sampling rule: the token that follows `token_ids` (prompt then outputs).
  // Like the real sampler, it bans eos (unless ignore_eos) and stop ids below min_tokens.
  int32_t next_token(std::span<const int32_t> token_ids, int num_prompt_tokens,
                     const SamplingParams& params, uint64_t seed) const;

  int64_t num_executions() const { return num_executions_; }
  // Tokens whose K/V the fake computed, over all executions.
  int64_t num_computed_tokens() const { return num_computed_tokens_; }
  const std::vector<ChunkRecord>& last_batch() const { return last_batch_; }

 private:
  void check_and_write_kv(const Sequence& seq, int first, int end);

  FakeModelRunnerOptions options_;
  TokenFn token_fn_;
  // Per slot: a hash of the tokens up to and including the position written there, which
  // is what a real K/V vector depends on. 0 = never written.
  std::vector<uint64_t> kv_;
  // Per slot: the execution that last wrote it, to catch two chunks writing one slot.
  std::vector<int64_t> kv_writer_;
  int64_t num_executions_ = 0;
  int64_t num_computed_tokens_ = 0;
  std::vector<ChunkRecord> last_batch_;
};

}  // namespace nanovllm::testing
