// Qwen3 (dense): per-head RMSNorm of q and k before the rotary embedding; no q/k/v bias
// unless attention_bias says so.
#include "model_family.h"

namespace nanovllm {
namespace {

DecoderTraits qwen3_traits(const ModelConfig& config) {
  DecoderTraits traits;
  traits.qkv_bias = config.attention_bias;
  traits.qk_norm = true;
  return traits;
}

const ModelFamilyRegistration registration({"Qwen3ForCausalLM", qwen3_traits});

}  // namespace
}  // namespace nanovllm
