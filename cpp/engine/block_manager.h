// The paged KV cache's bookkeeping: a fixed pool of blocks of block_size token slots,
// shared by reference count, with an optional prefix cache over full blocks.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <unordered_map>
#include <vector>

#include "nanovllm/sequence.h"

namespace nanovllm {

// Hash of one full block, chained over the hash of the block before it (its prefix).
using BlockHashFn = std::function<uint64_t(uint64_t parent_hash, std::span<const int32_t> tokens)>;

uint64_t default_block_hash(uint64_t parent_hash, std::span<const int32_t> tokens);

// The prefix cache's answer for a sequence that holds no blocks yet.
struct PrefixMatch {
  // Cached blocks that hold the K/V of the sequence's first blocks, in position order.
  std::vector<int32_t> blocks;
  // The sequence's next full block is being computed by a running sequence right now:
  // waiting for it is cheaper than computing it twice.
  bool blocked_on_pending = false;
};

class BlockManager {
 public:
  // hash_fn replaces the block hash (tests force collisions with it); empty = default.
  BlockManager(int num_blocks, int block_size, bool enable_prefix_caching,
               BlockHashFn hash_fn = {});

  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  int block_size() const { return block_size_; }
  bool prefix_caching() const { return enable_prefix_caching_; }
  // Blocks no sequence holds: never used, or freed (cached contents kept until evicted).
  int num_free_blocks() const {
    return static_cast<int>(uncached_free_.size()) + num_evictable_;
  }
  int num_used_blocks() const { return num_blocks() - num_free_blocks(); }
  int ref_count(int32_t block) const { return blocks_[block].ref_count; }
  // The block's K/V is computed and can be served to a matching prefix.
  bool is_cached(int32_t block) const { return blocks_[block].state == CacheState::kCached; }
  int blocks_for_tokens(int num_tokens) const {
    return (num_tokens + block_size_ - 1) / block_size_;
  }

  // Prompt tokens looked up in the prefix cache at admissions, and those it served.
  int64_t num_queried_tokens() const { return num_queried_tokens_; }
  int64_t num_hit_tokens() const { return num_hit_tokens_; }

  // Longest run of cached full blocks that starts the sequence. Leaves at least one token
  // to compute, because the last token's logits are what the step samples from.
  PrefixMatch match_prefix(const Sequence& seq) const;

  // Admits a sequence that holds no blocks: it takes `prefix` (from match_prefix, in the
  // same step), which counts as computed, and blocks for num_new_tokens more. Returns
  // false and changes nothing when the free blocks do not suffice.
  bool admit(Sequence& seq, const PrefixMatch& prefix, int num_new_tokens);

  // Grows the sequence's block table to hold num_new_tokens more tokens after its computed
  // ones. Returns false and changes nothing when the free blocks do not suffice.
  bool append_slots(Sequence& seq, int num_new_tokens);

  // Called once the runner computed the sequence's tokens up to num_computed_tokens():
  // every block that became full since num_computed_before joins the prefix cache.
  void commit_computed(const Sequence& seq, int num_computed_before);

  // Drops the sequence's references and empties its block table. Cached blocks stay
  // reusable until evicted; blocks still being computed lose their pending entry.
  void free(Sequence& seq);

 private:
  enum class CacheState : uint8_t {
    kNone,     // not in the prefix cache
    kPending,  // in the map, K/V not computed yet (its owner is running)
    kCached,   // in the map, K/V computed
  };

  struct Block {
    int ref_count = 0;
    CacheState state = CacheState::kNone;
    uint64_t hash = 0;
    // The block it followed when it joined the cache, and that block's generation then:
    // a hit must follow the same chain of blocks, not merely an equal hash.
    int32_t parent = -1;
    uint32_t parent_generation = 0;
    // Bumped whenever the block leaves the cache, which invalidates links to it.
    uint32_t generation = 0;
    // Intrusive LRU list of cached free blocks.
    int32_t lru_prev = -1;
    int32_t lru_next = -1;
  };

  std::span<const int32_t> block_tokens(const Sequence& seq, int index) const;
  std::span<const int32_t> stored_tokens(int32_t block) const;
  bool links_to(const Block& block, int32_t parent) const;
  // Takes a free block for new contents: a never-cached one first, else evicts the least
  // recently used cached one.
  int32_t take_free_block();
  void acquire(int32_t block);
  void release(int32_t block);
  // Puts block `index` of the sequence into the map as `state` if its parent chain is in
  // the cache and no other block holds its hash.
  void try_register(const Sequence& seq, int index, CacheState state);
  void unregister(int32_t block);
  void lru_push_back(int32_t block);
  void lru_remove(int32_t block);

  int block_size_;
  bool enable_prefix_caching_;
  BlockHashFn hash_fn_;
  std::vector<Block> blocks_;
  // num_blocks * block_size token ids: what each cached block holds, so that a hit is
  // verified token by token.
  std::vector<int32_t> tokens_;
  std::vector<int32_t> uncached_free_;
  int32_t lru_head_ = -1;  // evicted first
  int32_t lru_tail_ = -1;
  int num_evictable_ = 0;
  std::unordered_map<uint64_t, int32_t> hash_to_block_;
  int64_t num_queried_tokens_ = 0;
  int64_t num_hit_tokens_ = 0;
};

}  // namespace nanovllm
