// Reads a model's *.safetensors files by memory-mapping them: tensors are views of the
// mapped bytes, so opening a checkpoint copies nothing.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/core/Tensor.h>

namespace nanovllm {

class SafetensorsWeights {
 public:
  // Maps the files that <model_dir>/model.safetensors.index.json names or, without an
  // index, every *.safetensors file in the folder. Throws std::runtime_error when there is
  // none, or when a file is not a valid safetensors file.
  explicit SafetensorsWeights(const std::filesystem::path& model_dir);

  bool contains(const std::string& name) const { return entries_.count(name) != 0; }

  // A read-only CPU view of the tensor's bytes. The tensor keeps its file mapped for as
  // long as it lives. Throws naming the tensor and the files searched when it is absent,
  // and naming the dtype when it is not BF16, F16 or F32.
  at::Tensor get(const std::string& name) const;

  // The files searched, for error messages.
  std::string describe_files() const;

 private:
  struct Mapping;
  struct Entry {
    std::shared_ptr<const Mapping> mapping;
    std::string dtype;  // safetensors spelling: "BF16", "F32", ...
    std::vector<int64_t> shape;
    size_t offset = 0;  // from the start of the mapping
  };

  void add_file(const std::filesystem::path& path);

  std::vector<std::filesystem::path> files_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace nanovllm
