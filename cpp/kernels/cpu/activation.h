// The gated MLP's activation on the CPU: SiLU of the gate times the up projection, read
// straight from the fused gate/up GEMM output (one pass instead of three ATen ops and two
// temporaries).
#pragma once

#include <ATen/core/Tensor.h>

namespace nanovllm::kernels::cpu {

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i], with inter = out.size(1).
// silu is rounded to the dtype before the product, as transformers' act_fn(gate) * up does.
//   gate_up: [tokens, 2 * inter], rows contiguous (any row stride)
//   out:     [tokens, inter], contiguous, same dtype (float32 or bfloat16)
void silu_and_mul(const at::Tensor& out, const at::Tensor& gate_up);

}  // namespace nanovllm::kernels::cpu
