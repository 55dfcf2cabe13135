#include "model_family.h"

#include <algorithm>
#include <map>
#include <stdexcept>

namespace nanovllm {
namespace {

// Constructed on first use, so registrations from other translation units never see it
// uninitialised whatever their static-initialisation order.
std::map<std::string, ModelFamily>& registry() {
  static std::map<std::string, ModelFamily> families;
  return families;
}

}  // namespace

ModelFamilyRegistration::ModelFamilyRegistration(ModelFamily family) {
  std::string name = family.architecture;
  registry().emplace(std::move(name), std::move(family));
}

const ModelFamily& find_model_family(const ModelConfig& config) {
  for (const std::string& architecture : config.architectures) {
    const auto it = registry().find(architecture);
    if (it != registry().end()) return it->second;
  }
  std::string requested;
  for (const std::string& architecture : config.architectures) {
    requested += (requested.empty() ? "" : ", ") + architecture;
  }
  std::string supported;
  for (const std::string& architecture : supported_architectures()) {
    supported += (supported.empty() ? "" : ", ") + architecture;
  }
  throw std::runtime_error("unsupported model architecture " + requested +
                           " (supported: " + supported + ")");
}

std::vector<std::string> supported_architectures() {
  std::vector<std::string> names;
  for (const auto& [name, family] : registry()) names.push_back(name);
  return names;  // std::map keeps them sorted
}

}  // namespace nanovllm
