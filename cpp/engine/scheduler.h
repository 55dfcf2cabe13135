// Picks each step's batch: continuous batching of decode tokens and chunked prefills
// within max_num_seqs and max_num_batched_tokens, preempting when blocks run out.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "block_manager.h"
#include "nanovllm/model_runner.h"
#include "nanovllm/sequence.h"

namespace nanovllm {

class Scheduler {
 public:
  Scheduler(int max_num_seqs, int max_num_batched_tokens, BlockManager block_manager);

  // Queues a new sequence behind every waiting one.
  void add(Sequence& seq);

  // The next step's batch. Running sequences come first, oldest first, one decode token
  // or one prefill chunk each; then waiting ones are admitted in order while sequences,
  // tokens and blocks last. A running sequence that needs a block when none is free
  // preempts the newest running one (its blocks are freed; it waits at the front and is
  // recomputed). Sequences keep their computed counts until advance().
  std::vector<ScheduledChunk> schedule();

  // The runner computed num_tokens more of the sequence's tokens.
  void advance(Sequence& seq, int num_tokens);

  // Finishes a waiting or running sequence: it leaves its queue and frees its blocks.
  void finish(Sequence& seq, FinishReason reason);

  const std::deque<Sequence*>& waiting() const { return waiting_; }
  // In admission order: the newest last.
  const std::vector<Sequence*>& running() const { return running_; }
  const BlockManager& block_manager() const { return block_manager_; }
  int64_t num_preemptions() const { return num_preemptions_; }

 private:
  void preempt(Sequence& seq);

  int max_num_seqs_;
  int max_num_batched_tokens_;
  BlockManager block_manager_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;
  int64_t num_preemptions_ = 0;
};

}  // namespace nanovllm
