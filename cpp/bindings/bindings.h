// nanobind glue for nanovllm._core, split by concept; module.cpp ties the parts together.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

namespace nanovllm::bindings {

namespace nb = nanobind;

void bind_params(nb::module_& m);
void bind_engine(nb::module_& m);
void bind_engine_loop(nb::module_& m);

// Binds a plain struct's fields and then a __repr__ that lists them all, so that the
// field list is written once.
template <typename T>
class FieldBinder {
 public:
  FieldBinder(nb::class_<T>& cls, const char* type_name) : cls_(cls), type_name_(type_name) {}
  FieldBinder(const FieldBinder&) = delete;
  FieldBinder& operator=(const FieldBinder&) = delete;

  template <typename M>
  FieldBinder& rw(const char* name, M T::*member) {
    cls_.def_rw(name, member);
    names_.emplace_back(name);
    return *this;
  }
  template <typename M>
  FieldBinder& ro(const char* name, M T::*member) {
    cls_.def_ro(name, member);
    names_.emplace_back(name);
    return *this;
  }
  template <typename Getter>
  FieldBinder& prop_ro(const char* name, Getter&& getter) {
    cls_.def_prop_ro(name, std::forward<Getter>(getter));
    names_.emplace_back(name);
    return *this;
  }

  // Last: `TypeName(field=value, ...)` over every field bound above.
  void def_repr() {
    cls_.def("__repr__", [type_name = type_name_, names = std::move(names_)](nb::handle self) {
      std::string text = type_name + "(";
      for (size_t i = 0; i < names.size(); ++i) {
        if (i > 0) text += ", ";
        text += names[i] + "=" + nb::repr(self.attr(names[i].c_str())).c_str();
      }
      return text + ")";
    });
  }

 private:
  nb::class_<T>& cls_;
  std::string type_name_;
  std::vector<std::string> names_;
};

}  // namespace nanovllm::bindings
