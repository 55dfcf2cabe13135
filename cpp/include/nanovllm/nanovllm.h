// Everything an embedding program needs: build an EngineConfig, create a runner for a
// model folder, drive LLMEngine with token ids.
#pragma once

#include "nanovllm/config.h"
#include "nanovllm/engine_loop.h"
#include "nanovllm/llm_engine.h"
#include "nanovllm/model_runner.h"
#include "nanovllm/sampling_params.h"
#include "nanovllm/sequence.h"
#include "nanovllm/torch_model_runner.h"
