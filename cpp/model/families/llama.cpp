// Llama (Llama 2/3, SmolLM, ...): the plain decoder. Llama 3 RoPE scaling is parsed by
// model_config and applied by the rotary embedding, so nothing here depends on it.
#include "model_family.h"

namespace nanovllm {
namespace {

DecoderTraits llama_traits(const ModelConfig& config) {
  DecoderTraits traits;
  traits.qkv_bias = config.attention_bias;
  return traits;
}

const ModelFamilyRegistration registration({"LlamaForCausalLM", llama_traits});

}  // namespace
}  // namespace nanovllm
