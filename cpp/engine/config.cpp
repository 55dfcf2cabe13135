#include "nanovllm/config.h"

#include "validation.h"

namespace nanovllm {

using detail::reject;

void EngineConfig::validate() const {
  if (dtype != "auto" && dtype != "float32" && dtype != "bfloat16" && dtype != "float16") {
    reject("dtype", '"' + dtype + '"', "use \"auto\", \"float32\", \"bfloat16\" or \"float16\"");
  }
  if (device != "cpu" && device != "cuda") {
    reject("device", '"' + device + '"', "use \"cpu\" or \"cuda\"");
  }
  if (!quantization.empty() && quantization != "int8") {
    reject("quantization", '"' + quantization + '"', "use none or \"int8\"");
  }
  if (max_num_seqs < 1) reject("max_num_seqs", max_num_seqs, "must be >= 1");
  if (max_num_batched_tokens < 1) {
    reject("max_num_batched_tokens", max_num_batched_tokens, "must be >= 1");
  }
  if (max_model_len < 0) {
    reject("max_model_len", max_model_len, "must be >= 1, or 0 for the model's own limit");
  }
  if (kvcache_block_size < 1 || kvcache_block_size > 1024) {
    reject("kvcache_block_size", kvcache_block_size, "must be between 1 and 1024");
  }
  if (num_kvcache_blocks == 0 || num_kvcache_blocks < -1) {
    reject("num_kvcache_blocks", num_kvcache_blocks,
           "must be >= 1, or -1 to size the cache from the memory budget");
  }
  if (kv_cache_memory < 0) {
    reject("kv_cache_memory", kv_cache_memory, "must be >= 0 bytes (0 = default budget)");
  }
  if (!(gpu_memory_utilization > 0.0 && gpu_memory_utilization <= 1.0)) {
    reject("gpu_memory_utilization", gpu_memory_utilization, "must be in (0, 1]");
  }
  if (tensor_parallel_size != 1) {
    reject("tensor_parallel_size", tensor_parallel_size, "only 1 is supported");
  }
  if (num_threads < 0) reject("num_threads", num_threads, "must be >= 0 (0 = all cores)");
}

}  // namespace nanovllm
