// Qwen2 / Qwen2.5: Llama with biases on the q/k/v projections (always present, whatever
// attention_bias says).
#include "model_family.h"

namespace nanovllm {
namespace {

DecoderTraits qwen2_traits(const ModelConfig&) {
  DecoderTraits traits;
  traits.qkv_bias = true;
  return traits;
}

const ModelFamilyRegistration registration({"Qwen2ForCausalLM", qwen2_traits});

}  // namespace
}  // namespace nanovllm
