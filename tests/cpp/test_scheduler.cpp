#include "scheduler.h"

#include <gtest/gtest.h>

#include <memory>
#include <numeric>
#include <vector>

namespace nanovllm {
namespace {

// Owns the sequences a test schedules and plays the engine's part after each step.
class SchedulerHarness {
 public:
  SchedulerHarness(int max_num_seqs, int max_num_batched_tokens, int num_blocks, int block_size,
                   bool prefix_caching = false)
      : scheduler(max_num_seqs, max_num_batched_tokens,
                  BlockManager(num_blocks, block_size, prefix_caching)) {}

  Sequence& add(int num_prompt_tokens, int32_t first_token = 1) {
    std::vector<int32_t> tokens(num_prompt_tokens);
    std::iota(tokens.begin(), tokens.end(), first_token);
    sequences.push_back(std::make_unique<Sequence>(static_cast<int64_t>(sequences.size()),
                                                   std::move(tokens), SamplingParams{}, 0));
    scheduler.add(*sequences.back());
    return *sequences.back();
  }

  // Schedules, "computes" the batch and appends a token to every sampled sequence.
  std::vector<ScheduledChunk> step() {
    std::vector<ScheduledChunk> batch = scheduler.schedule();
    for (const ScheduledChunk& chunk : batch) {
      Sequence& seq = const_cast<Sequence&>(*chunk.seq);
      scheduler.advance(seq, chunk.num_tokens);
      if (chunk.sample) seq.append_token(7);
    }
    return batch;
  }

  Scheduler scheduler;
  std::vector<std::unique_ptr<Sequence>> sequences;
};

int total_tokens(const std::vector<ScheduledChunk>& batch) {
  int total = 0;
  for (const ScheduledChunk& chunk : batch) total += chunk.num_tokens;
  return total;
}

TEST(Scheduler, RespectsMaxNumSeqsAndMaxNumBatchedTokens) {
  SchedulerHarness h(/*max_num_seqs=*/4, /*max_num_batched_tokens=*/12, /*num_blocks=*/64,
                     /*block_size=*/4);
  for (int i = 0; i < 10; ++i) h.add(5, 10 * i);

  // Two whole prompts and a chunk of a third fill the 12-token budget.
  std::vector<ScheduledChunk> batch = h.step();
  ASSERT_EQ(batch.size(), 3u);
  EXPECT_EQ(batch[0].num_tokens, 5);
  EXPECT_EQ(batch[1].num_tokens, 5);
  EXPECT_EQ(batch[2].num_tokens, 2);
  EXPECT_FALSE(batch[2].sample);

  for (int i = 0; i < 30; ++i) {
    batch = h.step();
    EXPECT_LE(batch.size(), 4u);
    EXPECT_LE(total_tokens(batch), 12);
    EXPECT_LE(h.scheduler.running().size(), 4u);
  }
}

TEST(Scheduler, ChunksALongPromptAcrossSteps) {
  SchedulerHarness h(8, 32, 64, 16);
  Sequence& seq = h.add(100);
  for (int expected : {32, 32, 32}) {
    const std::vector<ScheduledChunk> batch = h.step();
    ASSERT_EQ(batch.size(), 1u);
    EXPECT_EQ(batch[0].num_tokens, expected);
    EXPECT_FALSE(batch[0].sample);
  }
  std::vector<ScheduledChunk> batch = h.step();
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].num_tokens, 4);
  EXPECT_TRUE(batch[0].sample);
  EXPECT_EQ(seq.num_output_tokens(), 1);

  batch = h.step();  // decode
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].num_tokens, 1);
  EXPECT_TRUE(batch[0].sample);
}

TEST(Scheduler, DecodesComeBeforeNewPrefills) {
  SchedulerHarness h(8, 10, 64, 4);
  Sequence& first = h.add(6);
  h.step();
  Sequence& second = h.add(20);
  const std::vector<ScheduledChunk> batch = h.step();
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[0].seq, &first);
  EXPECT_EQ(batch[0].num_tokens, 1);
  EXPECT_EQ(batch[1].seq, &second);
  EXPECT_EQ(batch[1].num_tokens, 9);  // the rest of the budget
}

TEST(Scheduler, PreemptsTheNewestRunningSequenceWhenBlocksRunOut) {
  SchedulerHarness h(8, 64, /*num_blocks=*/6, /*block_size=*/4);
  Sequence& a = h.add(8, 100);
  Sequence& b = h.add(8, 200);
  Sequence& c = h.add(8, 300);
  ASSERT_EQ(h.step().size(), 3u);  // all six blocks in use
  EXPECT_EQ(h.scheduler.block_manager().num_free_blocks(), 0);
  Sequence& d = h.add(4, 400);

  // a and b each need a third block for position 8: c, the newest, gives its two up.
  const std::vector<ScheduledChunk> batch = h.step();
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[0].seq, &a);
  EXPECT_EQ(batch[1].seq, &b);
  EXPECT_EQ(h.scheduler.num_preemptions(), 1);
  EXPECT_EQ(c.status(), SequenceStatus::kWaiting);
  EXPECT_EQ(c.num_computed_tokens(), 0);
  EXPECT_TRUE(c.block_table().empty());
  EXPECT_EQ(c.num_preemptions(), 1);
  // c goes back to the front, ahead of requests that never ran.
  ASSERT_EQ(h.scheduler.waiting().size(), 2u);
  EXPECT_EQ(h.scheduler.waiting().front(), &c);
  EXPECT_EQ(h.scheduler.waiting().back(), &d);

  // Once a finishes, c is recomputed from scratch: its prompt and its output token.
  h.scheduler.finish(a, FinishReason::kLength);
  const std::vector<ScheduledChunk> next = h.step();
  ASSERT_EQ(next.size(), 2u);
  EXPECT_EQ(next[1].seq, &c);
  EXPECT_EQ(next[1].num_tokens, 9);
  EXPECT_TRUE(next[1].sample);
}

TEST(Scheduler, TheNewestSequencePreemptsItselfWhenItNeedsABlock) {
  // a is older than b; when b needs a block and none is free, b (the newest) gives way.
  SchedulerHarness h(8, 64, 5, 4);
  Sequence& a = h.add(8, 100);
  Sequence& b = h.add(7, 200);
  h.step();
  h.step();  // a takes the last free block for position 8; b still fits position 7
  ASSERT_EQ(h.scheduler.block_manager().num_free_blocks(), 0);
  const std::vector<ScheduledChunk> batch = h.step();  // b needs one for position 8
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].seq, &a);
  EXPECT_EQ(b.status(), SequenceStatus::kWaiting);
  EXPECT_EQ(b.num_preemptions(), 1);
}

TEST(Scheduler, FinishRemovesWaitingAndRunningSequences) {
  SchedulerHarness h(1, 64, 16, 4);
  Sequence& running = h.add(5);
  Sequence& waiting = h.add(5);
  h.step();
  ASSERT_EQ(running.status(), SequenceStatus::kRunning);
  ASSERT_EQ(waiting.status(), SequenceStatus::kWaiting);
  h.scheduler.finish(waiting, FinishReason::kAbort);
  h.scheduler.finish(running, FinishReason::kAbort);
  EXPECT_TRUE(h.scheduler.waiting().empty());
  EXPECT_TRUE(h.scheduler.running().empty());
  EXPECT_EQ(h.scheduler.block_manager().num_free_blocks(), 16);
  EXPECT_TRUE(h.step().empty());
}

TEST(Scheduler, SiblingsWaitForTheSharedPrefixInsteadOfComputingItTwice) {
  SchedulerHarness h(8, 64, 32, 4, /*prefix_caching=*/true);
  Sequence& first = h.add(18);
  Sequence& second = h.add(18);
  std::vector<ScheduledChunk> batch = h.step();
  ASSERT_EQ(batch.size(), 1u);  // second waits for first's blocks
  EXPECT_EQ(batch[0].seq, &first);
  EXPECT_EQ(second.status(), SequenceStatus::kWaiting);

  batch = h.step();
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(batch[1].seq, &second);
  EXPECT_EQ(second.num_cached_tokens(), 16);
  EXPECT_EQ(batch[1].num_tokens, 2);
}

}  // namespace
}  // namespace nanovllm
