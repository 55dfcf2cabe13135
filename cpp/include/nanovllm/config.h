// Engine configuration: the one place where defaults are defined. Python surfaces these
// fields under vLLM's names and never restates the defaults.
#pragma once

#include <cstdint>
#include <string>

namespace nanovllm {

struct EngineConfig {
  // Hugging Face model folder (config.json + *.safetensors). Empty for engines driven by
  // a caller-provided ModelRunner.
  std::string model;
  // "auto" (the checkpoint's dtype), "float32", "bfloat16" or "float16".
  std::string dtype = "auto";
  // "cpu" or "cuda" (the latter only when the library was built with CUDA Torch).
  std::string device = "cpu";
  // "" (none) or "int8": weight-only, per-output-channel scales, done at load time.
  std::string quantization;

  // Upper bounds of one engine step.
  int max_num_seqs = 256;
  int max_num_batched_tokens = 2048;
  // Longest prompt + output a request may have; 0 means the model's own limit
  // (max_position_embeddings).
  int max_model_len = 0;

  // Paged KV cache geometry. num_kvcache_blocks = -1 sizes the cache from the memory
  // budget: kv_cache_memory bytes on the CPU (0 = default budget), or
  // gpu_memory_utilization of the device memory on CUDA.
  int kvcache_block_size = 16;
  int num_kvcache_blocks = -1;
  int64_t kv_cache_memory = 0;
  double gpu_memory_utilization = 0.9;

  bool enable_prefix_caching = true;
  // Disables CUDA graphs (decode runs eagerly); no effect on the CPU.
  bool enforce_eager = false;
  // Only 1 is supported; the field exists so vLLM-style configurations parse.
  int tensor_parallel_size = 1;
  // Intra-op threads for the CPU runner; 0 keeps Torch's default (all cores).
  int num_threads = 0;

  // Throws std::invalid_argument naming the field, the value and what is allowed.
  void validate() const;
};

}  // namespace nanovllm
