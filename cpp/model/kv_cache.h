// The paged KV cache: per layer, a key and a value tensor of
// [num_blocks, block_size, num_kv_heads, head_dim]. Block ids come from the engine's
// BlockManager; the cache only owns the memory.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "nanovllm/config.h"

namespace nanovllm {

struct KVCacheShape {
  int num_layers = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  at::ScalarType dtype = at::kFloat;

  // Bytes one block takes across all layers, keys and values.
  int64_t bytes_per_block() const;
};

// How many blocks to allocate: config.num_kvcache_blocks when set; otherwise as many as
// the memory budget holds (config.kv_cache_memory bytes, or kDefaultCpuKVCacheMemory),
// but never more than max_num_seqs sequences of max_model_len tokens could fill at once.
// Throws std::invalid_argument when the budget does not hold a single block.
constexpr int64_t kDefaultCpuKVCacheMemory = int64_t{2} << 30;
int plan_num_kvcache_blocks(const EngineConfig& config, const KVCacheShape& shape, int max_model_len);

class KVCache {
 public:
  KVCache(const KVCacheShape& shape, int num_blocks);

  const at::Tensor& key(int layer) const { return keys_[layer]; }
  const at::Tensor& value(int layer) const { return values_[layer]; }
  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }

 private:
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
  int num_blocks_;
  int block_size_;
};

}  // namespace nanovllm
