#include "activation.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "avx512_math.h"

namespace nanovllm::kernels::cpu {
namespace {

// x · sigmoid(x) through e^-|x| only, which never overflows.
NANOVLLM_AVX512 inline __m512 silu16(__m512 x) {
  const __m512 e = avx512::exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
  const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 numerator = _mm512_mask_mul_ps(x, negative, x, e);
  return _mm512_div_ps(numerator, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

NANOVLLM_AVX512 void silu_and_mul_row_avx512(c10::BFloat16* out, const c10::BFloat16* gate,
                                             const c10::BFloat16* up, int64_t n) {
  auto* o = reinterpret_cast<uint16_t*>(out);
  const auto* g = reinterpret_cast<const uint16_t*>(gate);
  const auto* u = reinterpret_cast<const uint16_t*>(up);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = avx512::tail_mask(n - i);
    // Rounded to bfloat16 between the two steps, as transformers' act_fn(gate) * up is.
    const __m512 activated = avx512::round_bf16(silu16(avx512::load_bf16(g + i, mask)));
    avx512::store_bf16(o + i, _mm512_mul_ps(activated, avx512::load_bf16(u + i, mask)), mask);
  }
}

NANOVLLM_AVX512 void silu_and_mul_row_avx512(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = avx512::tail_mask(n - i);
    const __m512 activated = silu16(avx512::load_f32(gate + i, mask));
    avx512::store_f32(out + i, _mm512_mul_ps(activated, avx512::load_f32(up + i, mask)), mask);
  }
}

template <typename T>
void silu_and_mul_row_scalar(T* out, const T* gate, const T* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = static_cast<float>(gate[i]);
    const T activated = static_cast<T>(x / (1.0f + std::exp(-x)));
    out[i] = static_cast<T>(static_cast<float>(activated) * static_cast<float>(up[i]));
  }
}

template <typename T>
void silu_and_mul_rows(const at::Tensor& out, const at::Tensor& gate_up) {
  const int64_t inter = out.size(1);
  const int64_t in_stride = gate_up.stride(0);
  T* dst = out.data_ptr<T>();
  const T* src = gate_up.const_data_ptr<T>();
  const bool vectorised = !std::is_same_v<T, c10::Half> && avx512::supported();
  // Rows per task: about 256k elements, some tens of microseconds of work. A decode batch
  // runs inline: waking the thread pool costs more than it saves, and much more where the
  // cores are shared.
  const int64_t grain = std::max<int64_t>(1, 262144 / inter);
  at::parallel_for(0, out.size(0), grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      T* o = dst + t * inter;
      const T* gate = src + t * in_stride;
      if constexpr (!std::is_same_v<T, c10::Half>) {
        if (vectorised) {
          silu_and_mul_row_avx512(o, gate, gate + inter, inter);
          continue;
        }
      }
      silu_and_mul_row_scalar(o, gate, gate + inter, inter);
    }
  });
}

}  // namespace

void silu_and_mul(const at::Tensor& out, const at::Tensor& gate_up) {
  TORCH_CHECK(out.dim() == 2 && out.is_contiguous() && gate_up.dim() == 2 &&
                  gate_up.stride(1) == 1 && gate_up.size(0) == out.size(0) &&
                  gate_up.size(1) == 2 * out.size(1) && gate_up.scalar_type() == out.scalar_type(),
              "silu_and_mul: out ", out.sizes(), " must be contiguous [tokens, inter] and gate_up ",
              gate_up.sizes(), " [tokens, 2 * inter] with rows contiguous, of one dtype");
  switch (out.scalar_type()) {
    case at::kBFloat16: silu_and_mul_rows<c10::BFloat16>(out, gate_up); break;
    case at::kFloat: silu_and_mul_rows<float>(out, gate_up); break;
    case at::kHalf: silu_and_mul_rows<c10::Half>(out, gate_up); break;
    default: TORCH_CHECK(false, "silu_and_mul: unsupported dtype ", out.scalar_type());
  }
}

}  // namespace nanovllm::kernels::cpu
