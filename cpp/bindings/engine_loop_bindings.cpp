// _core.EngineLoop: the threaded engine front end the HTTP server drives. Every call that
// can wait (a step, a model load, an empty stream) releases the GIL.
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <utility>

#include "bindings.h"
#include "nanovllm/engine_loop.h"
#include "nanovllm/torch_model_runner.h"

namespace nanovllm::bindings {
namespace {

using namespace nb::literals;

// Seconds from Python; capped at a day so a huge value cannot overflow the clock.
EngineLoop::Clock::duration to_duration(double seconds) {
  const double capped = std::clamp(seconds, 0.0, 86400.0);
  return std::chrono::duration_cast<EngineLoop::Clock::duration>(
      std::chrono::duration<double>(capped));
}

}  // namespace

void bind_engine_loop(nb::module_& m) {
  nb::exception<QueueFullError>(m, "QueueFullError", PyExc_RuntimeError);
  nb::exception<EngineStoppedError>(m, "EngineStoppedError", PyExc_RuntimeError);

  using release_gil = nb::call_guard<nb::gil_scoped_release>;
  nb::class_<EngineLoop>(m, "EngineLoop",
                         "LLMEngine stepping on its own thread; thread-safe submit / abort / "
                         "per-request output streams.")
      .def(
          "__init__",
          [](EngineLoop* self, const EngineConfig& config, int max_pending) {
            nb::gil_scoped_release release;
            auto engine = std::make_unique<LLMEngine>(config, create_torch_model_runner(config));
            new (self) EngineLoop(std::move(engine), max_pending);
          },
          "engine_config"_a, "max_pending"_a = EngineLoop::kDefaultMaxPending,
          "Loads the model and starts the step loop. At most max_pending requests may wait "
          "to be scheduled; submit raises QueueFullError beyond that.")
      .def(
          "submit",
          [](EngineLoop& self, std::vector<int32_t> prompt_token_ids,
             const SamplingParams& params) {
            return self.submit(std::move(prompt_token_ids), params);
          },
          "prompt_token_ids"_a, "params"_a, release_gil(),
          "Queues a request; returns its id once the engine accepted it. ValueError for an "
          "invalid request, QueueFullError when full, EngineStoppedError after shutdown.")
      .def("abort", &EngineLoop::abort, "request_id"_a, release_gil(),
           "Ends the request with finish reason 'abort'; its final output still arrives.")
      .def(
          "get",
          [](EngineLoop& self, int64_t request_id, double timeout_s) {
            return self.get(request_id, to_duration(timeout_s));
          },
          "request_id"_a, "timeout_s"_a, release_gil(),
          "Every output queued for the request, waiting up to timeout_s for the first "
          "(empty list on timeout). IndexError once its final output was taken.")
      .def(
          "poll",
          [](EngineLoop& self, double timeout_s) { return self.poll(to_duration(timeout_s)); },
          "timeout_s"_a, release_gil(),
          "Every output queued for any request, waiting up to timeout_s for the first.")
      .def_ro_static("DEFAULT_MAX_PENDING", &EngineLoop::kDefaultMaxPending)
      .def("stats", &EngineLoop::stats)
      .def_prop_ro("model_info", &EngineLoop::model_info, nb::rv_policy::reference_internal)
      .def_prop_ro("config", &EngineLoop::config, nb::rv_policy::reference_internal)
      .def_prop_ro("max_model_len", &EngineLoop::max_model_len)
      .def_prop_ro("error", &EngineLoop::error,
                   "Empty while healthy; why the step loop stopped if the model failed.")
      .def("shutdown", &EngineLoop::stop, release_gil(),
           "Aborts every unfinished request and joins the loop thread. Idempotent.");
}

}  // namespace nanovllm::bindings
