#include "block_manager.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace nanovllm {

namespace {

// Chain value the first block of every sequence hashes against.
constexpr uint64_t kRootHash = 0x6a09e667f3bcc908ULL;

// splitmix64's finalizer: every input bit flips about half the output bits.
uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

uint64_t default_block_hash(uint64_t parent_hash, std::span<const int32_t> tokens) {
  uint64_t hash = mix64(parent_hash);
  for (int32_t token : tokens) {
    hash = mix64(hash + 0x9e3779b97f4a7c15ULL + static_cast<uint32_t>(token));
  }
  return hash;
}

BlockManager::BlockManager(int num_blocks, int block_size, bool enable_prefix_caching,
                           BlockHashFn hash_fn)
    : block_size_(block_size),
      enable_prefix_caching_(enable_prefix_caching),
      hash_fn_(hash_fn ? std::move(hash_fn) : BlockHashFn(default_block_hash)) {
  if (num_blocks < 1 || block_size < 1) {
    throw std::invalid_argument(
        "the KV cache needs at least one block of at least one token (got " +
        std::to_string(num_blocks) + " blocks of " + std::to_string(block_size) + " tokens)");
  }
  blocks_.resize(num_blocks);
  if (enable_prefix_caching_) {
    tokens_.resize(static_cast<size_t>(num_blocks) * block_size);
    // At most one entry per block: never rehash in the middle of a step.
    hash_to_block_.reserve(num_blocks);
  }
  // Reversed so that blocks are handed out from id 0 up, which keeps tests readable.
  uncached_free_.reserve(num_blocks);
  for (int32_t block = num_blocks - 1; block >= 0; --block) uncached_free_.push_back(block);
}

std::span<const int32_t> BlockManager::block_tokens(const Sequence& seq, int index) const {
  return {seq.token_ids().data() + static_cast<size_t>(index) * block_size_,
          static_cast<size_t>(block_size_)};
}

std::span<const int32_t> BlockManager::stored_tokens(int32_t block) const {
  return {tokens_.data() + static_cast<size_t>(block) * block_size_,
          static_cast<size_t>(block_size_)};
}

bool BlockManager::links_to(const Block& block, int32_t parent) const {
  if (block.parent != parent) return false;
  return parent < 0 || block.parent_generation == blocks_[parent].generation;
}

PrefixMatch BlockManager::match_prefix(const Sequence& seq) const {
  PrefixMatch match;
  if (!enable_prefix_caching_) return match;
  const int max_blocks = (seq.num_tokens() - 1) / block_size_;
  uint64_t hash = kRootHash;
  int32_t parent = -1;
  for (int index = 0; index < max_blocks; ++index) {
    const std::span<const int32_t> tokens = block_tokens(seq, index);
    hash = hash_fn_(hash, tokens);
    const auto found = hash_to_block_.find(hash);
    if (found == hash_to_block_.end()) break;
    const int32_t block = found->second;
    // An equal hash is only a hint: the block must hold these very tokens after the very
    // blocks matched so far.
    if (!links_to(blocks_[block], parent) || !std::ranges::equal(stored_tokens(block), tokens)) {
      break;
    }
    if (blocks_[block].state == CacheState::kPending) {
      match.blocked_on_pending = true;
      break;
    }
    match.blocks.push_back(block);
    parent = block;
  }
  return match;
}

bool BlockManager::admit(Sequence& seq, const PrefixMatch& prefix, int num_new_tokens) {
  const int num_cached_blocks = static_cast<int>(prefix.blocks.size());
  const int num_cached_tokens = num_cached_blocks * block_size_;
  const int num_new_blocks =
      blocks_for_tokens(num_cached_tokens + num_new_tokens) - num_cached_blocks;
  // Cached blocks nobody holds come out of the free pool too.
  const auto num_revived = std::ranges::count_if(
      prefix.blocks, [this](int32_t block) { return blocks_[block].ref_count == 0; });
  if (num_new_blocks + num_revived > num_free_blocks()) return false;

  std::vector<int32_t>& table = seq.mutable_block_table();
  for (int32_t block : prefix.blocks) {
    acquire(block);
    table.push_back(block);
  }
  seq.set_num_computed_tokens(num_cached_tokens);
  seq.set_num_cached_tokens(num_cached_tokens);
  if (enable_prefix_caching_) {
    num_queried_tokens_ += seq.num_tokens();
    num_hit_tokens_ += num_cached_tokens;
  }
  return append_slots(seq, num_new_tokens);
}

bool BlockManager::append_slots(Sequence& seq, int num_new_tokens) {
  std::vector<int32_t>& table = seq.mutable_block_table();
  const int first_new = static_cast<int>(table.size());
  const int num_needed = blocks_for_tokens(seq.num_computed_tokens() + num_new_tokens) - first_new;
  if (num_needed <= 0) return true;
  if (num_needed > num_free_blocks()) return false;
  for (int index = first_new; index < first_new + num_needed; ++index) {
    const int32_t block = take_free_block();
    blocks_[block].ref_count = 1;
    table.push_back(block);
    // A block whose tokens are all known (prompt, or tokens being recomputed) is announced
    // now, so that a sequence with the same prefix waits for it instead of computing it too.
    if (enable_prefix_caching_ && (index + 1) * block_size_ <= seq.num_tokens()) {
      try_register(seq, index, CacheState::kPending);
    }
  }
  return true;
}

void BlockManager::commit_computed(const Sequence& seq, int num_computed_before) {
  if (!enable_prefix_caching_) return;
  const std::vector<int32_t>& table = seq.block_table();
  const int end = seq.num_computed_tokens() / block_size_;
  for (int index = num_computed_before / block_size_; index < end; ++index) {
    Block& block = blocks_[table[index]];
    if (block.state == CacheState::kPending) {
      block.state = CacheState::kCached;
    } else if (block.state == CacheState::kNone) {
      try_register(seq, index, CacheState::kCached);
    }
  }
}

void BlockManager::free(Sequence& seq) {
  std::vector<int32_t>& table = seq.mutable_block_table();
  // Last block first: the LRU then evicts a sequence's tail before the prefix it may share.
  for (auto block = table.rbegin(); block != table.rend(); ++block) release(*block);
  table.clear();
}

int32_t BlockManager::take_free_block() {
  if (!uncached_free_.empty()) {
    const int32_t block = uncached_free_.back();
    uncached_free_.pop_back();
    return block;
  }
  const int32_t block = lru_head_;
  lru_remove(block);
  unregister(block);
  return block;
}

void BlockManager::acquire(int32_t block) {
  if (blocks_[block].ref_count++ == 0) lru_remove(block);
}

void BlockManager::release(int32_t block) {
  Block& meta = blocks_[block];
  if (--meta.ref_count > 0) return;
  // A pending block's K/V was never finished: nobody may wait for it any longer.
  if (meta.state == CacheState::kPending) unregister(block);
  if (meta.state == CacheState::kCached) {
    lru_push_back(block);
  } else {
    uncached_free_.push_back(block);
  }
}

void BlockManager::try_register(const Sequence& seq, int index, CacheState state) {
  const std::vector<int32_t>& table = seq.block_table();
  const int32_t block = table[index];
  const int32_t parent = index == 0 ? -1 : table[index - 1];
  // A block after an uncached one could never be reached by a lookup.
  if (parent >= 0 && blocks_[parent].state == CacheState::kNone) return;
  const std::span<const int32_t> tokens = block_tokens(seq, index);
  const uint64_t hash = hash_fn_(parent < 0 ? kRootHash : blocks_[parent].hash, tokens);
  // Another block holds this hash: the same contents computed twice, or a collision. The
  // first keeps its place; this one simply stays out of the cache.
  if (!hash_to_block_.try_emplace(hash, block).second) return;
  Block& meta = blocks_[block];
  meta.state = state;
  meta.hash = hash;
  meta.parent = parent;
  meta.parent_generation = parent < 0 ? 0 : blocks_[parent].generation;
  std::ranges::copy(tokens, tokens_.begin() + static_cast<ptrdiff_t>(block) * block_size_);
}

void BlockManager::unregister(int32_t block) {
  Block& meta = blocks_[block];
  hash_to_block_.erase(meta.hash);
  meta.state = CacheState::kNone;
  ++meta.generation;
}

void BlockManager::lru_push_back(int32_t block) {
  Block& meta = blocks_[block];
  meta.lru_prev = lru_tail_;
  meta.lru_next = -1;
  if (lru_tail_ >= 0) {
    blocks_[lru_tail_].lru_next = block;
  } else {
    lru_head_ = block;
  }
  lru_tail_ = block;
  ++num_evictable_;
}

void BlockManager::lru_remove(int32_t block) {
  Block& meta = blocks_[block];
  if (meta.lru_prev >= 0) {
    blocks_[meta.lru_prev].lru_next = meta.lru_next;
  } else {
    lru_head_ = meta.lru_next;
  }
  if (meta.lru_next >= 0) {
    blocks_[meta.lru_next].lru_prev = meta.lru_prev;
  } else {
    lru_tail_ = meta.lru_prev;
  }
  meta.lru_prev = meta.lru_next = -1;
  --num_evictable_;
}

}  // namespace nanovllm
