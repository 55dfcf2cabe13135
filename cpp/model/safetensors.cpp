#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <stdexcept>

#include <ATen/ops/from_blob.h>
#include <nlohmann/json.hpp>

namespace nanovllm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

size_t element_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  return 1;  // I8, U8, BOOL, F8_*
}

}  // namespace

// A read-only private mapping of one file, unmapped when the last tensor viewing it dies.
struct SafetensorsWeights::Mapping {
  explicit Mapping(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open " + path.string() + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_size < 8) {
      ::close(fd);
      throw std::runtime_error(path.string() + " is not a safetensors file (shorter than its header)");
    }
    size = static_cast<size_t>(st.st_size);
    void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);  // the mapping keeps the file alive
    if (mapped == MAP_FAILED) {
      throw std::runtime_error("cannot map " + path.string() + ": " + std::strerror(errno));
    }
    // Loading reads (almost) every byte; ask the kernel to read ahead.
    ::madvise(mapped, size, MADV_WILLNEED);
    data = static_cast<const char*>(mapped);
  }
  ~Mapping() { ::munmap(const_cast<char*>(data), size); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  const char* data = nullptr;
  size_t size = 0;
};

SafetensorsWeights::SafetensorsWeights(const fs::path& model_dir) {
  const fs::path index_path = model_dir / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    std::ifstream in(index_path);
    json index;
    try {
      index = json::parse(in);
    } catch (const json::exception& e) {
      throw std::runtime_error(index_path.string() + " is not valid JSON: " + e.what());
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
      throw std::runtime_error(index_path.string() + " has no \"weight_map\" object");
    }
    std::set<std::string> shard_names;
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string()) {
        throw std::runtime_error(index_path.string() + ": weight_map entry for \"" + tensor +
                                 "\" is not a file name");
      }
      shard_names.insert(file.get<std::string>());
    }
    for (const std::string& name : shard_names) {
      const fs::path shard = model_dir / name;
      if (!fs::exists(shard)) {
        throw std::runtime_error(index_path.string() + " names " + name + ", which is missing");
      }
      files_.push_back(shard);
    }
  } else {
    for (const auto& entry : fs::directory_iterator(model_dir)) {
      if (entry.is_regular_file() && entry.path().extension() == ".safetensors") {
        files_.push_back(entry.path());
      }
    }
    std::sort(files_.begin(), files_.end());
  }
  if (files_.empty()) {
    throw std::runtime_error("model folder " + model_dir.string() + " has no *.safetensors file");
  }
  for (const fs::path& file : files_) add_file(file);
}

void SafetensorsWeights::add_file(const fs::path& path) {
  auto mapping = std::make_shared<const Mapping>(path);
  uint64_t header_size = 0;
  std::memcpy(&header_size, mapping->data, sizeof(header_size));  // little-endian, as is x86
  if (header_size > mapping->size - 8) {
    throw std::runtime_error(path.string() + " is not a safetensors file (header size " +
                             std::to_string(header_size) + " exceeds the file)");
  }
  json header;
  try {
    header = json::parse(mapping->data + 8, mapping->data + 8 + header_size);
  } catch (const json::exception& e) {
    throw std::runtime_error(path.string() + " has a malformed safetensors header: " + e.what());
  }
  const size_t data_start = 8 + header_size;
  const size_t data_size = mapping->size - data_start;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    const auto bad = [&](const std::string& what) {
      return std::runtime_error(path.string() + ": tensor \"" + name + "\" " + what);
    };
    Entry entry;
    size_t begin = 0;
    size_t end = 0;
    try {
      entry.dtype = info.at("dtype").get<std::string>();
      entry.shape = info.at("shape").get<std::vector<int64_t>>();
      const auto offsets = info.at("data_offsets").get<std::vector<size_t>>();
      if (offsets.size() != 2) throw bad("has data_offsets of length " + std::to_string(offsets.size()));
      begin = offsets[0];
      end = offsets[1];
    } catch (const json::exception& e) {
      throw bad(std::string("has a malformed header entry: ") + e.what());
    }
    size_t numel = 1;
    for (int64_t dim : entry.shape) {
      if (dim < 0) throw bad("has a negative dimension");
      numel *= static_cast<size_t>(dim);
    }
    if (begin > end || end > data_size || end - begin != numel * element_size(entry.dtype)) {
      throw bad("has data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                ") that do not match its shape and dtype " + entry.dtype + " within the file");
    }
    entry.offset = data_start + begin;
    entry.mapping = mapping;
    if (!entries_.emplace(name, std::move(entry)).second) {
      throw bad("appears in more than one file of " + describe_files());
    }
  }
}

at::Tensor SafetensorsWeights::get(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) {
    throw std::runtime_error("tensor \"" + name + "\" not found in " + describe_files());
  }
  const Entry& entry = it->second;
  at::ScalarType dtype;
  if (entry.dtype == "BF16") {
    dtype = at::kBFloat16;
  } else if (entry.dtype == "F16") {
    dtype = at::kHalf;
  } else if (entry.dtype == "F32") {
    dtype = at::kFloat;
  } else {
    throw std::runtime_error("tensor \"" + name + "\" in " + describe_files() + " has dtype " +
                             entry.dtype + "; supported: BF16, F16, F32");
  }
  // The deleter owns a reference to the mapping: the bytes outlive every view of them.
  std::shared_ptr<const Mapping> keep_alive = entry.mapping;
  return at::from_blob(const_cast<char*>(entry.mapping->data + entry.offset), entry.shape,
                       [keep_alive](void*) {}, at::TensorOptions().dtype(dtype));
}

std::string SafetensorsWeights::describe_files() const {
  std::string out;
  for (const fs::path& file : files_) {
    if (!out.empty()) out += ", ";
    out += file.string();
  }
  return out;
}

}  // namespace nanovllm
