# Finds LibTorch through the Python torch package that is installed, so the C++ library
# and the Python module always link the same libtorch the interpreter loads.
find_package(Python 3.9 REQUIRED COMPONENTS Interpreter Development.Module)

if(NOT Torch_DIR)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _torch_result)
  if(NOT _torch_result EQUAL 0)
    message(FATAL_ERROR
      "nanovllm needs PyTorch to build its model runner, and `import torch` failed for "
      "${Python_EXECUTABLE}. Install it first (CPU build: pip install torch==2.13.0), "
      "or configure with -DNANOVLLM_BUILD_MODEL=OFF for the Torch-free engine core.")
  endif()
  list(PREPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
endif()

# Torch's CMake config warns about the optional kineto library; it is not used here.
find_package(Torch REQUIRED)

execute_process(
  COMMAND "${Python_EXECUTABLE}" -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"
  OUTPUT_VARIABLE NANOVLLM_TORCH_LIB_DIR OUTPUT_STRIP_TRAILING_WHITESPACE)

# TORCH_LIBRARIES includes torch_python-free targets only; keep the link set small.
set(NANOVLLM_TORCH_HAS_CUDA OFF)
if(TARGET torch_cuda OR TARGET c10_cuda)
  set(NANOVLLM_TORCH_HAS_CUDA ON)
endif()
message(STATUS "nanovllm: Torch ${Torch_VERSION} at ${NANOVLLM_TORCH_LIB_DIR} (CUDA: ${NANOVLLM_TORCH_HAS_CUDA})")
