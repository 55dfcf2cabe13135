// LLMEngine and what it returns. Construction and step() release the GIL: they load
// weights and run the model. The engine itself is single-threaded: one caller at a time.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "bindings.h"
#include "nanovllm/llm_engine.h"
#include "nanovllm/torch_model_runner.h"

namespace nanovllm::bindings {

using namespace nb::literals;

void bind_engine(nb::module_& m) {
  nb::class_<RequestOutput> output(m, "RequestOutput", "What one step produced for one request.");
  FieldBinder<RequestOutput>(output, "RequestOutput")
      .ro("request_id", &RequestOutput::request_id)
      .ro("new_token_ids", &RequestOutput::new_token_ids)
      .ro("new_logprobs", &RequestOutput::new_logprobs)
      .prop_ro("new_top_logprobs",
               [](const RequestOutput& self) {
                 nb::list rows;
                 for (const std::vector<TokenLogprob>& top : self.new_top_logprobs) {
                   nb::list row;
                   for (const TokenLogprob& entry : top) {
                     row.append(nb::make_tuple(entry.token_id, entry.logprob));
                   }
                   rows.append(row);
                 }
                 return rows;
               })
      .ro("finished", &RequestOutput::finished)
      .prop_ro("finish_reason",
               [](const RequestOutput& self) { return to_string(self.finish_reason); })
      .ro("num_prompt_tokens", &RequestOutput::num_prompt_tokens)
      .ro("num_cached_tokens", &RequestOutput::num_cached_tokens)
      .def_repr();

  nb::class_<EngineStats> stats(m, "EngineStats", "Counters and gauges of an engine.");
  FieldBinder<EngineStats>(stats, "EngineStats")
      .ro("num_running", &EngineStats::num_running)
      .ro("num_waiting", &EngineStats::num_waiting)
      .ro("num_kvcache_blocks", &EngineStats::num_kvcache_blocks)
      .ro("num_free_blocks", &EngineStats::num_free_blocks)
      .ro("kv_cache_usage", &EngineStats::kv_cache_usage)
      .ro("prefix_cache_queries", &EngineStats::prefix_cache_queries)
      .ro("prefix_cache_hits", &EngineStats::prefix_cache_hits)
      .ro("num_preemptions", &EngineStats::num_preemptions)
      .ro("prompt_tokens_total", &EngineStats::prompt_tokens_total)
      .ro("generation_tokens_total", &EngineStats::generation_tokens_total)
      .ro("num_steps", &EngineStats::num_steps)
      .def_repr();

  nb::class_<ModelInfo> info(m, "ModelInfo", "What the engine knows about its model.");
  FieldBinder<ModelInfo>(info, "ModelInfo")
      .ro("vocab_size", &ModelInfo::vocab_size)
      .ro("max_position_embeddings", &ModelInfo::max_position_embeddings)
      .ro("eos_token_ids", &ModelInfo::eos_token_ids)
      .def_repr();

  nb::class_<LLMEngine>(m, "LLMEngine",
                        "The step loop over the model in config.model. Not thread-safe.")
      .def(
          "__init__",
          [](LLMEngine* self, const EngineConfig& config) {
            new (self) LLMEngine(config, create_torch_model_runner(config));
          },
          "config"_a, nb::call_guard<nb::gil_scoped_release>())
      .def("add_request", &LLMEngine::add_request, "prompt_token_ids"_a, "params"_a,
           "Queues a request and returns its id; raises ValueError if it is invalid or can "
           "never fit.")
      .def("step", &LLMEngine::step, nb::call_guard<nb::gil_scoped_release>(),
           "Runs one step; returns an output per request that got a token or finished.")
      .def("abort", &LLMEngine::abort, "request_id"_a,
           "Finishes the request with reason 'abort'; False for unknown or finished ids.")
      .def("has_unfinished", &LLMEngine::has_unfinished)
      .def("stats", &LLMEngine::stats)
      .def_prop_ro("config", [](const LLMEngine& self) { return self.config(); },
                   "A copy of the configuration in use (max_model_len and "
                   "num_kvcache_blocks resolved).")
      .def_prop_ro("model_info", [](const LLMEngine& self) { return self.model_info(); })
      .def_prop_ro("max_model_len", &LLMEngine::max_model_len);
}

}  // namespace nanovllm::bindings
