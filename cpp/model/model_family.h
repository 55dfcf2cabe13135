// Model families: what distinguishes one decoder architecture from another. Each family is
// one file in families/ that registers itself; the shared decoder (decoder_model.h) reads
// the traits and never names an architecture.
#pragma once

#include <string>
#include <vector>

#include "model_config.h"

namespace nanovllm {

struct DecoderTraits {
  bool qkv_bias = false;  // q/k/v projections carry biases
  bool qk_norm = false;   // per-head RMSNorm of q and k before the rotary embedding
};

struct ModelFamily {
  std::string architecture;  // as config.json's "architectures" names it
  // Derives the traits from the checkpoint's config; throws when the config asks for
  // something the family does not implement.
  DecoderTraits (*traits)(const ModelConfig& config);
};

// Registers a family during static initialisation: a families/*.cpp file defines one
// `const ModelFamilyRegistration` at namespace scope. libnanovllm is a shared library, so
// every such object is linked in and registered when the library loads.
struct ModelFamilyRegistration {
  explicit ModelFamilyRegistration(ModelFamily family);
};

// The family of the first of config.architectures that is registered. Throws
// std::runtime_error listing the supported architectures when none is.
const ModelFamily& find_model_family(const ModelConfig& config);

// Registered architecture names, sorted.
std::vector<std::string> supported_architectures();

}  // namespace nanovllm
