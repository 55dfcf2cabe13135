// nanovllm._core: the C++ engine as Python sees it. Thin on purpose: type conversions and
// GIL release only; behaviour and validation live in libnanovllm.
#include <nanobind/nanobind.h>

#include "bindings.h"

NB_MODULE(_core, m) {
  m.doc() = "nano-vllm's C++ engine core (libnanovllm)";
  // An LLM or SamplingParams still referenced when the interpreter exits (a global, a
  // reference cycle with a traceback) is not a leak worth a screenful of warnings.
  nanobind::set_leak_warnings(false);
  nanovllm::bindings::bind_params(m);
  nanovllm::bindings::bind_engine(m);
  nanovllm::bindings::bind_engine_loop(m);
}
