#include "rms_norm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include "avx512_math.h"

namespace nanovllm::kernels::cpu {
namespace {

// Rows of a 2-D [rows, dim] or 3-D [tokens, heads, dim] tensor, addressed by flat index.
struct Rows {
  explicit Rows(const at::Tensor& t)
      : inner(t.dim() == 3 ? t.size(1) : 1),
        outer_stride(t.stride(0)),
        inner_stride(t.dim() == 3 ? t.stride(1) : 0),
        count(t.numel() / t.size(-1)) {}
  int64_t offset(int64_t row) const { return row / inner * outer_stride + row % inner * inner_stride; }
  int64_t inner, outer_stride, inner_stride, count;
};

void check_rows(const at::Tensor& t, const char* name) {
  TORCH_CHECK((t.dim() == 2 || t.dim() == 3) && t.stride(-1) == 1 &&
                  (t.dim() == 2 || t.stride(1) == t.size(2)),
              "rms_norm: ", name, " must be [rows, dim] or [tokens, heads, dim] with rows "
              "contiguous, got sizes ", t.sizes(), " strides ", t.strides());
}

// Sixteen partial sums: a reduction the compiler vectorises without -ffast-math.
template <typename T>
float sum_of_squares(const T* x, int64_t n) {
  float partial[16] = {};
  int64_t d = 0;
  for (; d + 16 <= n; d += 16) {
    for (int i = 0; i < 16; ++i) {
      const float v = static_cast<float>(x[d + i]);
      partial[i] += v * v;
    }
  }
  for (; d < n; ++d) partial[0] += static_cast<float>(x[d]) * static_cast<float>(x[d]);
  float total = 0.0f;
  for (float p : partial) total += p;
  return total;
}

float inverse_rms(float sum_of_squares, int64_t dim, double eps) {
  return static_cast<float>(1.0 / std::sqrt(sum_of_squares / static_cast<double>(dim) + eps));
}

// Rounds x·rstd to T before scaling by the weight, as Hugging Face's RMSNorm does, so that
// bf16 results match the reference implementation bit for bit more often.
template <typename T>
void normalize_row(T* out, const T* x, const T* weight, int64_t dim, double eps) {
  const float rstd = inverse_rms(sum_of_squares(x, dim), dim, eps);
  for (int64_t d = 0; d < dim; ++d) {
    const T normalized = static_cast<T>(static_cast<float>(x[d]) * rstd);
    out[d] = static_cast<T>(static_cast<float>(normalized) * static_cast<float>(weight[d]));
  }
}

template <typename T>
void add_normalize_row(T* h, T* s, const T* weight, int64_t dim, double eps) {
  for (int64_t d = 0; d < dim; ++d) {
    s[d] = static_cast<T>(static_cast<float>(s[d]) + static_cast<float>(h[d]));
  }
  normalize_row(h, s, weight, dim, eps);
}

// The AVX-512 rows: the same steps and roundings, 16 elements at a time.
NANOVLLM_AVX512 inline __m512 load16(const float* p, __mmask16 mask) { return avx512::load_f32(p, mask); }
NANOVLLM_AVX512 inline __m512 load16(const c10::BFloat16* p, __mmask16 mask) {
  return avx512::load_bf16(reinterpret_cast<const uint16_t*>(p), mask);
}
NANOVLLM_AVX512 inline void store16(float* p, __m512 v, __mmask16 mask) { avx512::store_f32(p, v, mask); }
NANOVLLM_AVX512 inline void store16(c10::BFloat16* p, __m512 v, __mmask16 mask) {
  avx512::store_bf16(reinterpret_cast<uint16_t*>(p), v, mask);
}
// v as stored in T and read back: the rounding a T temporary does.
NANOVLLM_AVX512 inline __m512 round_to(float*, __m512 v) { return v; }
NANOVLLM_AVX512 inline __m512 round_to(c10::BFloat16*, __m512 v) { return avx512::round_bf16(v); }

template <typename T>
NANOVLLM_AVX512 void normalize_row_avx512(T* out, const T* x, const T* weight, int64_t dim, double eps) {
  __m512 squares = _mm512_setzero_ps();
  for (int64_t d = 0; d < dim; d += 16) {
    const __m512 v = load16(x + d, avx512::tail_mask(dim - d));
    squares = _mm512_fmadd_ps(v, v, squares);
  }
  const __m512 rstd = _mm512_set1_ps(inverse_rms(avx512::sum_lanes(squares), dim, eps));
  for (int64_t d = 0; d < dim; d += 16) {
    const __mmask16 mask = avx512::tail_mask(dim - d);
    const __m512 normalized = round_to(out, _mm512_mul_ps(load16(x + d, mask), rstd));
    store16(out + d, _mm512_mul_ps(normalized, load16(weight + d, mask)), mask);
  }
}

template <typename T>
NANOVLLM_AVX512 void add_normalize_row_avx512(T* h, T* s, const T* weight, int64_t dim, double eps) {
  for (int64_t d = 0; d < dim; d += 16) {
    const __mmask16 mask = avx512::tail_mask(dim - d);
    store16(s + d, _mm512_add_ps(load16(s + d, mask), load16(h + d, mask)), mask);
  }
  normalize_row_avx512(h, s, weight, dim, eps);
}

template <typename T>
constexpr bool kHasAvx512Row = std::is_same_v<T, float> || std::is_same_v<T, c10::BFloat16>;

// Rows per task: about 256k elements, some tens of microseconds of work. Anything smaller
// (a decode batch) runs inline: waking the thread pool costs more than it saves, and much
// more where the cores are shared.
int64_t grain_rows(int64_t dim) { return std::max<int64_t>(1, 262144 / dim); }

}  // namespace

void rms_norm(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rows(x, "x");
  check_rows(out, "out");
  TORCH_CHECK(out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type() &&
                  weight.scalar_type() == x.scalar_type() && weight.is_contiguous() &&
                  weight.numel() == x.size(-1),
              "rms_norm: shapes/dtypes differ: x ", x.sizes(), " out ", out.sizes(), " weight ",
              weight.sizes());
  const Rows in_rows(x);
  const Rows out_rows(out);
  const int64_t dim = x.size(-1);
  const bool vectorised = avx512::supported();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rms_norm", [&] {
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    at::parallel_for(0, in_rows.count, grain_rows(dim), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        if constexpr (kHasAvx512Row<scalar_t>) {
          if (vectorised) {
            normalize_row_avx512(dst + out_rows.offset(r), src + in_rows.offset(r), w, dim, eps);
            continue;
          }
        }
        normalize_row(dst + out_rows.offset(r), src + in_rows.offset(r), w, dim, eps);
      }
    });
  });
}

void add_rms_norm(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight,
                  double eps) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && residual.is_contiguous() &&
                  residual.sizes() == x.sizes() && residual.scalar_type() == x.scalar_type() &&
                  weight.scalar_type() == x.scalar_type() && weight.is_contiguous() &&
                  weight.numel() == x.size(1),
              "add_rms_norm: x ", x.sizes(), ", residual ", residual.sizes(), " and weight ",
              weight.sizes(), " must be contiguous [rows, dim], [rows, dim], [dim] of one dtype");
  const int64_t dim = x.size(1);
  const bool vectorised = avx512::supported();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "add_rms_norm", [&] {
    scalar_t* hidden = x.data_ptr<scalar_t>();
    scalar_t* res = residual.data_ptr<scalar_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    at::parallel_for(0, x.size(0), grain_rows(dim), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        if constexpr (kHasAvx512Row<scalar_t>) {
          if (vectorised) {
            add_normalize_row_avx512(hidden + r * dim, res + r * dim, w, dim, eps);
            continue;
          }
        }
        add_normalize_row(hidden + r * dim, res + r * dim, w, dim, eps);
      }
    });
  });
}

}  // namespace nanovllm::kernels::cpu
