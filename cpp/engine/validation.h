// Helpers for the error messages users see: what was wrong and what is allowed.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace nanovllm::detail {

template <typename T>
[[noreturn]] void reject(const char* field, const T& value, const std::string& allowed) {
  std::ostringstream message;
  message << field << " = " << value << " is invalid: " << allowed;
  throw std::invalid_argument(message.str());
}

}  // namespace nanovllm::detail
