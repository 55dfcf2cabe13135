# ctest driver for the embedding example (cmake -DGENERATE=<program> -P this file).
#
# The model folder comes from the environment at test time: $NANOVLLM_TEST_MODEL, else the
# built-in SmolLM2-135M-Instruct under $NANOVLLM_CACHE or ~/.cache/nanovllm. A missing
# model fails the test: "model" tests need the prepared built-in models.
if(DEFINED ENV{NANOVLLM_TEST_MODEL})
  set(model "$ENV{NANOVLLM_TEST_MODEL}")
elseif(DEFINED ENV{NANOVLLM_CACHE})
  set(model "$ENV{NANOVLLM_CACHE}/models/SmolLM2-135M-Instruct")
else()
  set(model "$ENV{HOME}/.cache/nanovllm/models/SmolLM2-135M-Instruct")
endif()
if(NOT EXISTS "${model}/config.json")
  message(FATAL_ERROR
    "no SmolLM2-135M-Instruct model folder at ${model}: run `python -m nanovllm.builtin_models` "
    "to prepare the built-in models (or point NANOVLLM_TEST_MODEL at a prepared folder)")
endif()

# Greedy float32 ids from transformers on the same folder:
# AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).generate(do_sample=False)
#   "The capital of France is" -> " Paris.\n\nThe answer is: 2018-01"
#   "def fibonacci(n):"        -> "\n    if n == 0:\n        return 1\n    return n * fib"
set(prompt_0 "504,3575,282,4649,314")
set(expected_0 "7042 30 198 198 504 2988 314 42 216 34 32 33 40 29 32 33")
set(prompt_1 "1604,3987,46477,24,94,727")
set(expected_1 "472 585 304 1758 216 32 42 448 1003 216 33 472 1003 304 1672 3987")

# As the Python package does: idle OpenMP workers sleep rather than spin, which on shared
# cores makes decode several times faster. GNU OpenMP reads this when the program loads.
if(NOT DEFINED ENV{OMP_WAIT_POLICY} AND NOT DEFINED ENV{GOMP_SPINCOUNT})
  set(ENV{OMP_WAIT_POLICY} PASSIVE)
endif()
execute_process(
  COMMAND "${GENERATE}" "${model}" --dtype float32 --max-tokens 16 --num-kvcache-blocks 64
          --prompt-ids ${prompt_0} --prompt-ids ${prompt_1}
  OUTPUT_VARIABLE output ERROR_VARIABLE errors RESULT_VARIABLE status)
message("${output}${errors}")
if(NOT status EQUAL 0)
  message(FATAL_ERROR "nanovllm_generate failed (exit status ${status})")
endif()
foreach(i 0 1)
  if(NOT output MATCHES "request ${i}: [0-9]+ prompt tokens -> 16 tokens \\(length\\): ${expected_${i}}\n")
    message(FATAL_ERROR "request ${i}: expected the tokens ${expected_${i}} (transformers, float32)")
  endif()
endforeach()
