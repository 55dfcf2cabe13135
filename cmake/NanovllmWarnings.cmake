# Warnings for the project's own targets (never for third-party headers).
function(nanovllm_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()
