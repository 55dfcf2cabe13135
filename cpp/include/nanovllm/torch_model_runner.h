// Creates the LibTorch model runner for a Hugging Face model folder. This header stays
// free of Torch includes so embedding programs compile quickly.
#pragma once

#include <memory>

#include "nanovllm/config.h"
#include "nanovllm/model_runner.h"

namespace nanovllm {

// Loads config.json and the safetensors weights of config.model, allocates the KV cache
// and returns a runner ready for LLMEngine. Throws std::runtime_error /
// std::invalid_argument with a message naming the file, tensor or option at fault.
std::unique_ptr<ModelRunner> create_torch_model_runner(const EngineConfig& config);

}  // namespace nanovllm
