#include "block_manager.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

namespace nanovllm {
namespace {

Sequence make_seq(int64_t id, std::vector<int32_t> tokens) {
  return Sequence(id, std::move(tokens), SamplingParams{}, 0);
}

std::vector<int32_t> tokens_from(int32_t first, int count) {
  std::vector<int32_t> tokens(count);
  std::iota(tokens.begin(), tokens.end(), first);
  return tokens;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Admits the sequence with whatever the prefix cache serves and computes all its tokens,
// as one engine step would.
void admit_and_compute(BlockManager& blocks, Sequence& seq) {
  const PrefixMatch prefix = blocks.match_prefix(seq);
  ASSERT_FALSE(prefix.blocked_on_pending);
  const int num_cached = static_cast<int>(prefix.blocks.size()) * blocks.block_size();
  ASSERT_TRUE(blocks.admit(seq, prefix, seq.num_tokens() - num_cached));
  seq.set_num_computed_tokens(seq.num_tokens());
  blocks.commit_computed(seq, num_cached);
}

TEST(BlockManager, AllocatesAppendsAndFreesWithReferenceCounts) {
  BlockManager blocks(/*num_blocks=*/8, /*block_size=*/4, /*enable_prefix_caching=*/false);
  Sequence seq = make_seq(0, tokens_from(1, 10));
  ASSERT_TRUE(blocks.admit(seq, {}, 10));
  EXPECT_EQ(seq.block_table().size(), 3u);
  EXPECT_EQ(blocks.num_free_blocks(), 5);
  for (int32_t block : seq.block_table()) EXPECT_EQ(blocks.ref_count(block), 1);

  // Decoding positions 10 and 11 fits the third block; position 12 needs a fourth.
  seq.set_num_computed_tokens(10);
  seq.append_token(50);
  ASSERT_TRUE(blocks.append_slots(seq, 1));
  seq.set_num_computed_tokens(11);
  seq.append_token(51);
  ASSERT_TRUE(blocks.append_slots(seq, 1));
  EXPECT_EQ(seq.block_table().size(), 3u);
  seq.set_num_computed_tokens(12);
  seq.append_token(52);
  ASSERT_TRUE(blocks.append_slots(seq, 1));
  EXPECT_EQ(seq.block_table().size(), 4u);
  EXPECT_EQ(blocks.num_used_blocks(), 4);

  // Asking for more than is free changes nothing.
  EXPECT_FALSE(blocks.append_slots(seq, 4 * 5 + 1));
  EXPECT_EQ(seq.block_table().size(), 4u);
  EXPECT_EQ(blocks.num_free_blocks(), 4);

  const std::vector<int32_t> held = seq.block_table();
  blocks.free(seq);
  EXPECT_TRUE(seq.block_table().empty());
  EXPECT_EQ(blocks.num_free_blocks(), 8);
  for (int32_t block : held) EXPECT_EQ(blocks.ref_count(block), 0);
}

TEST(BlockManager, SharedPrefixBlocksAreReferenceCounted) {
  BlockManager blocks(8, 4, true);
  const std::vector<int32_t> system = tokens_from(100, 8);
  Sequence a = make_seq(0, concat(system, {1, 2, 3}));
  Sequence b = make_seq(1, concat(system, {7, 8, 9, 10, 11}));
  admit_and_compute(blocks, a);
  admit_and_compute(blocks, b);

  ASSERT_EQ(a.block_table().size(), 3u);
  ASSERT_EQ(b.block_table().size(), 4u);
  EXPECT_EQ(b.num_cached_tokens(), 8);
  EXPECT_EQ(b.block_table()[0], a.block_table()[0]);
  EXPECT_EQ(b.block_table()[1], a.block_table()[1]);
  EXPECT_NE(b.block_table()[2], a.block_table()[2]);
  EXPECT_EQ(blocks.ref_count(a.block_table()[0]), 2);
  EXPECT_EQ(blocks.ref_count(a.block_table()[1]), 2);
  EXPECT_EQ(blocks.num_used_blocks(), 5);

  const std::vector<int32_t> shared(a.block_table().begin(), a.block_table().begin() + 2);
  blocks.free(a);
  for (int32_t block : shared) EXPECT_EQ(blocks.ref_count(block), 1);
  blocks.free(b);
  for (int32_t block : shared) {
    EXPECT_EQ(blocks.ref_count(block), 0);
    EXPECT_TRUE(blocks.is_cached(block));  // freed, but still reusable
  }
  EXPECT_EQ(blocks.num_free_blocks(), 8);
}

TEST(BlockManager, SharedSystemPromptHitsAndIsCounted) {
  BlockManager blocks(16, 4, true);
  const std::vector<int32_t> system = tokens_from(100, 12);
  Sequence first = make_seq(0, concat(system, {1, 2}));
  admit_and_compute(blocks, first);
  blocks.free(first);  // finished: its blocks stay cached

  Sequence second = make_seq(1, concat(system, {5, 6, 7}));
  admit_and_compute(blocks, second);
  EXPECT_EQ(second.num_cached_tokens(), 12);
  EXPECT_EQ(blocks.num_queried_tokens(), 14 + 15);
  EXPECT_EQ(blocks.num_hit_tokens(), 12);
}

TEST(BlockManager, FullyCachedPromptStillComputesItsLastToken) {
  BlockManager blocks(16, 4, true);
  const std::vector<int32_t> prompt = tokens_from(1, 8);  // exactly two full blocks
  Sequence first = make_seq(0, prompt);
  admit_and_compute(blocks, first);

  // The second block holds the last token, whose logits are needed: it is computed again.
  Sequence again = make_seq(1, prompt);
  const PrefixMatch match = blocks.match_prefix(again);
  EXPECT_EQ(match.blocks.size(), 1u);
  ASSERT_TRUE(blocks.admit(again, match, 4));
  EXPECT_EQ(again.num_computed_tokens(), 4);
  EXPECT_EQ(again.num_cached_tokens(), 4);

  // One token past the cached blocks: everything but that token is served.
  Sequence longer = make_seq(2, concat(prompt, {99}));
  EXPECT_EQ(blocks.match_prefix(longer).blocks.size(), 2u);
}

TEST(BlockManager, DisabledPrefixCachingNeverHits) {
  BlockManager blocks(16, 4, false);
  Sequence first = make_seq(0, tokens_from(1, 9));
  admit_and_compute(blocks, first);
  Sequence again = make_seq(1, tokens_from(1, 9));
  EXPECT_TRUE(blocks.match_prefix(again).blocks.empty());
  EXPECT_EQ(blocks.num_queried_tokens(), 0);
}

TEST(BlockManager, CollidingHashWithOtherTokensIsNotServed) {
  // Every block hashes alike: only the stored tokens can tell them apart.
  BlockManager blocks(16, 4, true, [](uint64_t, std::span<const int32_t>) { return uint64_t{42}; });
  Sequence a = make_seq(0, concat(tokens_from(1, 4), tokens_from(10, 5)));
  admit_and_compute(blocks, a);

  Sequence other = make_seq(1, concat(tokens_from(500, 4), tokens_from(10, 5)));
  EXPECT_TRUE(blocks.match_prefix(other).blocks.empty());

  Sequence same_start = make_seq(2, concat(tokens_from(1, 4), tokens_from(900, 5)));
  const PrefixMatch match = blocks.match_prefix(same_start);
  ASSERT_EQ(match.blocks.size(), 1u);
  EXPECT_EQ(match.blocks[0], a.block_table()[0]);
}

TEST(BlockManager, EqualBlockAfterAnotherPrefixIsNotServed) {
  // The hash ignores the prefix, so equal blocks collide whatever came before them; a hit
  // must still follow the chain of blocks actually matched.
  BlockManager blocks(16, 4, true, [](uint64_t, std::span<const int32_t> tokens) {
    return default_block_hash(0, tokens);
  });
  const std::vector<int32_t> p = tokens_from(1, 4), q = tokens_from(20, 4), r = tokens_from(40, 4);
  Sequence pq = make_seq(0, concat(concat(p, q), {7}));
  Sequence rs = make_seq(1, concat(concat(r, tokens_from(60, 4)), {7}));
  admit_and_compute(blocks, pq);
  admit_and_compute(blocks, rs);

  // Block r matches; the cached q block was computed after p, not after r.
  Sequence rq = make_seq(2, concat(concat(r, q), {7}));
  const PrefixMatch match = blocks.match_prefix(rq);
  ASSERT_EQ(match.blocks.size(), 1u);
  EXPECT_EQ(match.blocks[0], rs.block_table()[0]);
}

TEST(BlockManager, EvictsLeastRecentlyUsedFirst) {
  BlockManager blocks(4, 2, true);
  Sequence a = make_seq(0, {1, 1}), b = make_seq(1, {2, 2}), c = make_seq(2, {3, 3});
  for (Sequence* seq : {&a, &b, &c}) admit_and_compute(blocks, *seq);
  const int32_t block_a = a.block_table()[0], block_b = b.block_table()[0],
                block_c = c.block_table()[0];
  for (Sequence* seq : {&a, &b, &c}) blocks.free(*seq);

  // Reusing b makes it the most recently used: the order is now a, c, b.
  Sequence b_again = make_seq(3, {2, 2, 9});
  admit_and_compute(blocks, b_again);
  EXPECT_EQ(b_again.block_table()[0], block_b);
  blocks.free(b_again);

  // Two new blocks: the never-cached one first, then a is evicted.
  Sequence fresh = make_seq(4, {7, 7, 7, 7});
  ASSERT_TRUE(blocks.admit(fresh, {}, 4));
  EXPECT_FALSE(blocks.is_cached(block_a));
  EXPECT_TRUE(blocks.is_cached(block_b));
  EXPECT_TRUE(blocks.is_cached(block_c));
  Sequence probe_a = make_seq(5, {1, 1, 0});
  EXPECT_TRUE(blocks.match_prefix(probe_a).blocks.empty());

  // The next one evicts c, and b survives.
  Sequence more = make_seq(6, {8, 8});
  ASSERT_TRUE(blocks.admit(more, {}, 2));
  EXPECT_FALSE(blocks.is_cached(block_c));
  EXPECT_TRUE(blocks.is_cached(block_b));
  Sequence probe_b = make_seq(7, {2, 2, 0});
  EXPECT_EQ(blocks.match_prefix(probe_b).blocks.size(), 1u);
}

TEST(BlockManager, WaitsForABlockAnotherSequenceIsComputing) {
  BlockManager blocks(16, 4, true);
  const std::vector<int32_t> prompt = tokens_from(1, 10);
  Sequence owner = make_seq(0, prompt);
  ASSERT_TRUE(blocks.admit(owner, {}, 10));

  Sequence sibling = make_seq(1, prompt);
  EXPECT_TRUE(blocks.match_prefix(sibling).blocked_on_pending);

  owner.set_num_computed_tokens(10);
  blocks.commit_computed(owner, 0);
  const PrefixMatch match = blocks.match_prefix(sibling);
  EXPECT_FALSE(match.blocked_on_pending);
  EXPECT_EQ(match.blocks.size(), 2u);
}

TEST(BlockManager, FreeingTheOwnerDropsItsPendingBlocks) {
  BlockManager blocks(16, 4, true);
  const std::vector<int32_t> prompt = tokens_from(1, 10);
  Sequence owner = make_seq(0, prompt);
  ASSERT_TRUE(blocks.admit(owner, {}, 10));
  // Preempted (or aborted) before its K/V was computed: nothing is left to wait for.
  blocks.free(owner);

  Sequence sibling = make_seq(1, prompt);
  const PrefixMatch match = blocks.match_prefix(sibling);
  EXPECT_FALSE(match.blocked_on_pending);
  EXPECT_TRUE(match.blocks.empty());
  EXPECT_EQ(blocks.num_free_blocks(), 16);
}

TEST(BlockManager, OutputBlocksJoinTheCacheOnceComputed) {
  BlockManager blocks(16, 4, true);
  Sequence seq = make_seq(0, tokens_from(1, 3));
  admit_and_compute(blocks, seq);
  // Decode: position 3 completes the first block (prompt + one output).
  seq.append_token(77);
  ASSERT_TRUE(blocks.append_slots(seq, 1));
  EXPECT_FALSE(blocks.is_cached(seq.block_table()[0]));
  seq.set_num_computed_tokens(4);
  blocks.commit_computed(seq, 3);
  EXPECT_TRUE(blocks.is_cached(seq.block_table()[0]));

  Sequence follower = make_seq(1, {1, 2, 3, 77, 5});
  EXPECT_EQ(blocks.match_prefix(follower).blocks.size(), 1u);
}

}  // namespace
}  // namespace nanovllm
