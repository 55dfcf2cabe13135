// EngineConfig and SamplingParams: read/write fields with the C++ names, validate(), repr.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "bindings.h"
#include "nanovllm/config.h"
#include "nanovllm/sampling_params.h"

namespace nanovllm::bindings {

void bind_params(nb::module_& m) {
  nb::class_<EngineConfig> config(m, "EngineConfig",
                                  "Engine configuration; the defaults are the C++ ones.");
  config.def(nb::init<>())
      .def("validate", &EngineConfig::validate,
           "Raises ValueError naming the field, the value and what is allowed.");
  FieldBinder<EngineConfig>(config, "EngineConfig")
      .rw("model", &EngineConfig::model)
      .rw("dtype", &EngineConfig::dtype)
      .rw("device", &EngineConfig::device)
      .rw("quantization", &EngineConfig::quantization)
      .rw("max_num_seqs", &EngineConfig::max_num_seqs)
      .rw("max_num_batched_tokens", &EngineConfig::max_num_batched_tokens)
      .rw("max_model_len", &EngineConfig::max_model_len)
      .rw("kvcache_block_size", &EngineConfig::kvcache_block_size)
      .rw("num_kvcache_blocks", &EngineConfig::num_kvcache_blocks)
      .rw("kv_cache_memory", &EngineConfig::kv_cache_memory)
      .rw("gpu_memory_utilization", &EngineConfig::gpu_memory_utilization)
      .rw("enable_prefix_caching", &EngineConfig::enable_prefix_caching)
      .rw("enforce_eager", &EngineConfig::enforce_eager)
      .rw("tensor_parallel_size", &EngineConfig::tensor_parallel_size)
      .rw("num_threads", &EngineConfig::num_threads)
      .def_repr();

  nb::class_<SamplingParams> params(m, "SamplingParams",
                                    "Per-request sampling parameters (vLLM's names and meanings).");
  params.def(nb::init<>())
      .def("validate", &SamplingParams::validate,
           "Raises ValueError naming the field, the value and what is allowed.");
  FieldBinder<SamplingParams>(params, "SamplingParams")
      .rw("temperature", &SamplingParams::temperature)
      .rw("top_p", &SamplingParams::top_p)
      .rw("top_k", &SamplingParams::top_k)
      .rw("min_p", &SamplingParams::min_p)
      .rw("repetition_penalty", &SamplingParams::repetition_penalty)
      .rw("presence_penalty", &SamplingParams::presence_penalty)
      .rw("frequency_penalty", &SamplingParams::frequency_penalty)
      .rw("seed", &SamplingParams::seed)
      .rw("max_tokens", &SamplingParams::max_tokens)
      .rw("min_tokens", &SamplingParams::min_tokens)
      .rw("stop_token_ids", &SamplingParams::stop_token_ids)
      .rw("ignore_eos", &SamplingParams::ignore_eos)
      .rw("logprobs", &SamplingParams::logprobs)
      .def_repr();
}

}  // namespace nanovllm::bindings
