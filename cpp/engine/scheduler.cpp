#include "scheduler.h"

#include <algorithm>
#include <utility>

namespace nanovllm {

Scheduler::Scheduler(int max_num_seqs, int max_num_batched_tokens, BlockManager block_manager)
    : max_num_seqs_(max_num_seqs),
      max_num_batched_tokens_(max_num_batched_tokens),
      block_manager_(std::move(block_manager)) {
  running_.reserve(max_num_seqs);
}

void Scheduler::add(Sequence& seq) {
  seq.set_status(SequenceStatus::kWaiting);
  waiting_.push_back(&seq);
}

std::vector<ScheduledChunk> Scheduler::schedule() {
  std::vector<ScheduledChunk> batch;
  batch.reserve(running_.size() + 1);
  int budget = max_num_batched_tokens_;
  bool preempted = false;

  // Preemption takes sequences from the back, which this loop has not reached yet, so a
  // sequence already in the batch is never preempted.
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Sequence& seq = *running_[i];
    const int num_tokens = std::min(seq.num_tokens() - seq.num_computed_tokens(), budget);
    bool has_blocks = true;
    while (!block_manager_.append_slots(seq, num_tokens)) {
      Sequence& victim = *running_.back();
      running_.pop_back();
      preempt(victim);
      preempted = true;
      if (&victim == &seq) {
        has_blocks = false;
        break;
      }
    }
    if (!has_blocks) break;
    batch.push_back({&seq, num_tokens, seq.num_computed_tokens() + num_tokens == seq.num_tokens()});
    budget -= num_tokens;
  }
  // Blocks just ran out: admitting now would only preempt again next step.
  if (preempted) return batch;

  for (auto it = waiting_.begin(); it != waiting_.end() && budget > 0 &&
                                   static_cast<int>(running_.size()) < max_num_seqs_;) {
    Sequence& seq = **it;
    const PrefixMatch prefix = block_manager_.match_prefix(seq);
    if (prefix.blocked_on_pending) {
      // Its next block is being computed by a running sequence; the owner always makes
      // progress (or is preempted, which drops the pending block), so this cannot hang.
      ++it;
      continue;
    }
    const int num_cached_tokens =
        static_cast<int>(prefix.blocks.size()) * block_manager_.block_size();
    const int num_tokens = std::min(seq.num_tokens() - num_cached_tokens, budget);
    // First come, first served: a later request must not take the blocks this one waits for.
    if (!block_manager_.admit(seq, prefix, num_tokens)) break;
    it = waiting_.erase(it);
    seq.set_status(SequenceStatus::kRunning);
    running_.push_back(&seq);
    batch.push_back({&seq, num_tokens, seq.num_computed_tokens() + num_tokens == seq.num_tokens()});
    budget -= num_tokens;
  }
  return batch;
}

void Scheduler::advance(Sequence& seq, int num_tokens) {
  const int num_computed_before = seq.num_computed_tokens();
  seq.set_num_computed_tokens(num_computed_before + num_tokens);
  block_manager_.commit_computed(seq, num_computed_before);
}

void Scheduler::finish(Sequence& seq, FinishReason reason) {
  if (seq.status() == SequenceStatus::kWaiting) {
    waiting_.erase(std::ranges::find(waiting_, &seq));
  } else if (seq.status() == SequenceStatus::kRunning) {
    running_.erase(std::ranges::find(running_, &seq));
  }
  block_manager_.free(seq);
  seq.finish(reason);
}

void Scheduler::preempt(Sequence& seq) {
  block_manager_.free(seq);
  seq.set_num_computed_tokens(0);
  seq.set_status(SequenceStatus::kWaiting);
  seq.count_preemption();
  waiting_.push_front(&seq);
  ++num_preemptions_;
}

}  // namespace nanovllm
