#include "kv_cache.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <ATen/ops/empty.h>
#include <c10/core/ScalarType.h>

namespace nanovllm {

int64_t KVCacheShape::bytes_per_block() const {
  return int64_t{2} * num_layers * block_size * num_kv_heads * head_dim *
         static_cast<int64_t>(c10::elementSize(dtype));
}

int plan_num_kvcache_blocks(const EngineConfig& config, const KVCacheShape& shape, int max_model_len) {
  if (config.num_kvcache_blocks > 0) return config.num_kvcache_blocks;
  const int64_t budget = config.kv_cache_memory > 0 ? config.kv_cache_memory : kDefaultCpuKVCacheMemory;
  const int64_t per_block = shape.bytes_per_block();
  const int64_t affordable = budget / per_block;
  if (affordable < 1) {
    throw std::invalid_argument("kv_cache_memory: " + std::to_string(budget) +
                                " bytes hold no KV cache block of this model (one block of " +
                                std::to_string(shape.block_size) + " tokens takes " +
                                std::to_string(per_block) + " bytes)");
  }
  // More blocks than every sequence at full length could never be used.
  const int64_t blocks_per_seq = (max_model_len + shape.block_size - 1) / shape.block_size;
  const int64_t useful = int64_t{config.max_num_seqs} * blocks_per_seq;
  return static_cast<int>(std::min({affordable, useful, int64_t{INT32_MAX}}));
}

KVCache::KVCache(const KVCacheShape& shape, int num_blocks)
    : num_blocks_(num_blocks), block_size_(shape.block_size) {
  // Uninitialised: attention reads only slots that store_kv has written, and untouched
  // pages of a large cache cost no memory.
  const auto options = at::TensorOptions().dtype(shape.dtype);
  for (int layer = 0; layer < shape.num_layers; ++layer) {
    keys_.push_back(at::empty({num_blocks, shape.block_size, shape.num_kv_heads, shape.head_dim}, options));
    values_.push_back(at::empty({num_blocks, shape.block_size, shape.num_kv_heads, shape.head_dim}, options));
  }
}

}  // namespace nanovllm
