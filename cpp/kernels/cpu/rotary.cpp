#include "rotary.h"

#include <cstdint>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

namespace nanovllm::kernels::cpu {
namespace {

template <typename T>
void rotate_heads(T* x, int64_t heads, int64_t head_dim, const float* cos_sin) {
  const int64_t half = head_dim / 2;
  const float* cos = cos_sin;
  const float* sin = cos_sin + half;
  for (int64_t h = 0; h < heads; ++h) {
    T* first = x + h * head_dim;
    T* second = first + half;
    for (int64_t i = 0; i < half; ++i) {
      const float a = static_cast<float>(first[i]);
      const float b = static_cast<float>(second[i]);
      first[i] = static_cast<T>(a * cos[i] - b * sin[i]);
      second[i] = static_cast<T>(b * cos[i] + a * sin[i]);
    }
  }
}

void check_heads(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 3 && t.stride(2) == 1 && t.stride(1) == t.size(2), "apply_rotary: ",
              name, " must be [tokens, heads, head_dim] with heads contiguous, got sizes ",
              t.sizes(), " strides ", t.strides());
}

}  // namespace

void apply_rotary(const at::Tensor& query, const at::Tensor& key, const at::Tensor& positions,
                  const at::Tensor& cos_sin) {
  check_heads(query, "query");
  check_heads(key, "key");
  const int64_t head_dim = query.size(2);
  TORCH_CHECK(key.size(0) == query.size(0) && key.size(2) == head_dim &&
                  key.scalar_type() == query.scalar_type(),
              "apply_rotary: query ", query.sizes(), " and key ", key.sizes(), " do not match");
  TORCH_CHECK(cos_sin.scalar_type() == at::kFloat && cos_sin.is_contiguous() &&
                  cos_sin.dim() == 2 && cos_sin.size(1) == head_dim,
              "apply_rotary: cos_sin must be float32 [max_positions, head_dim]");
  TORCH_CHECK(positions.scalar_type() == at::kLong && positions.is_contiguous() &&
                  positions.numel() == query.size(0),
              "apply_rotary: positions must be int64 [tokens]");
  const int64_t* pos = positions.const_data_ptr<int64_t>();
  const float* table = cos_sin.const_data_ptr<float>();
  const int64_t max_positions = cos_sin.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, query.scalar_type(), "apply_rotary", [&] {
    scalar_t* q = query.data_ptr<scalar_t>();
    scalar_t* k = key.data_ptr<scalar_t>();
    at::parallel_for(0, query.size(0), 64, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        TORCH_CHECK(pos[t] >= 0 && pos[t] < max_positions, "apply_rotary: position ", pos[t],
                    " outside the table of ", max_positions);
        const float* cs = table + pos[t] * head_dim;
        rotate_heads(q + t * query.stride(0), query.size(1), head_dim, cs);
        rotate_heads(k + t * key.stride(0), key.size(1), head_dim, cs);
      }
    });
  });
}

}  // namespace nanovllm::kernels::cpu
