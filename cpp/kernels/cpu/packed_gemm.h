// Matrix products against weights packed once at load time, in bfloat16 or as weight-only
// int8 (symmetric, one scale per output channel). Activations are bfloat16 and the
// products accumulate in float32; see packed_gemm_kernel.h for the layout.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace nanovllm::kernels::cpu {

struct PackedWeight {
  at::Tensor data;    // bfloat16 or int8, [ceil(out / 64), ceil(in / 2), 64, 2] (int8 bytes
                      // reordered within each k pair: see packed_gemm_kernel.h)
  at::Tensor scales;  // float32 [64 * ceil(out / 64)] for int8; undefined for bfloat16
  int64_t out_features = 0;
  int64_t in_features = 0;
};

// weight: [out, in], any floating dtype.
PackedWeight pack_bfloat16(const at::Tensor& weight);
// Rounds each output channel to int8 on the scale max|w| / 127 (a zero channel stays zero).
PackedWeight quantize_int8(const at::Tensor& weight);

// Which inner loops to run: the fastest the CPU supports, or the portable scalar ones
// (kept selectable so tests can check both).
enum class GemmImpl { kBest, kScalar };

// True when kBest runs the AVX-512 BF16 kernel.
bool packed_gemm_accelerated();

// out = x · Wᵀ (· scales) + bias.
//   out:  [rows, out_features], bfloat16 or float32, contiguous
//   x:    [rows, in_features], bfloat16, unit column stride
//   bias: float32 [out_features], or undefined
void packed_linear(const at::Tensor& out, const at::Tensor& x, const PackedWeight& weight,
                   const at::Tensor& bias, GemmImpl impl = GemmImpl::kBest);

// out[i] = row indices[i] of W (scaled back for int8): the embedding lookup of a model
// whose LM head is its embedding table.
//   out:     [indices.numel(), in_features], float32, bfloat16 or float16, contiguous
//   indices: integer [count]
void packed_rows(const at::Tensor& out, const PackedWeight& weight, const at::Tensor& indices);

}  // namespace nanovllm::kernels::cpu
