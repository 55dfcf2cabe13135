// The element-wise CPU kernels (RMSNorm with and without the residual add, SiLU·up)
// against the ATen ops transformers runs, with its roundings: within one unit of the last
// place of the dtype. Rows of 40 and 200 elements exercise the vector loops' tails.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "cpu/activation.h"
#include "cpu/rms_norm.h"

namespace nanovllm::kernels::cpu {
namespace {

constexpr double kEps = 1e-6;

// One unit in the last place, relative: the kernels may differ from ATen by one rounding.
double tolerance(at::ScalarType dtype) {
  return dtype == at::kFloat ? 1e-5 : dtype == at::kBFloat16 ? 8e-3 : 1e-3;
}

// Largest |got - expected| relative to max(1, |expected|).
double relative_error(const at::Tensor& got, const at::Tensor& expected) {
  const at::Tensor e = expected.to(at::kDouble);
  return ((got.to(at::kDouble) - e).abs() / e.abs().clamp_min(1.0)).max().item<double>();
}

// transformers' Qwen2RMSNorm: float32 statistics, the normalised value rounded to the
// dtype, then the weight's product in the dtype.
at::Tensor reference_rms_norm(const at::Tensor& x, const at::Tensor& weight) {
  const at::Tensor f = x.to(at::kFloat);
  const at::Tensor normalized = f * (f.pow(2).mean(-1, true) + kEps).rsqrt();
  return weight * normalized.to(x.scalar_type());
}

class ElementWise : public ::testing::TestWithParam<std::tuple<at::ScalarType, int64_t>> {};

TEST_P(ElementWise, RmsNormMatchesTransformers) {
  const auto [dtype, dim] = GetParam();
  at::manual_seed(0);
  const at::Tensor x = (at::randn({33, dim}) * 3).to(dtype);
  const at::Tensor weight = at::randn({dim}).to(dtype);
  const at::Tensor out = at::empty_like(x);
  rms_norm(out, x, weight, kEps);
  EXPECT_LE(relative_error(out, reference_rms_norm(x, weight)), tolerance(dtype));
}

TEST_P(ElementWise, RmsNormOfStridedHeadsInPlace) {
  const auto [dtype, dim] = GetParam();
  at::manual_seed(1);
  // [tokens, heads, dim] inside a wider row, as q inside the fused QKV output.
  const at::Tensor fused = at::randn({5, 7, dim}).to(dtype);
  const at::Tensor heads = fused.narrow(1, 2, 3);
  const at::Tensor weight = at::randn({dim}).to(dtype);
  const at::Tensor expected = reference_rms_norm(heads, weight);
  const at::Tensor untouched = fused.narrow(1, 5, 2).clone();
  rms_norm(heads, heads, weight, kEps);
  EXPECT_LE(relative_error(heads, expected), tolerance(dtype));
  EXPECT_TRUE(at::equal(fused.narrow(1, 5, 2), untouched));
}

TEST_P(ElementWise, AddRmsNormUpdatesTheResidualAndNormalises) {
  const auto [dtype, dim] = GetParam();
  at::manual_seed(2);
  const at::Tensor x = at::randn({17, dim}).to(dtype);
  const at::Tensor residual = at::randn({17, dim}).to(dtype);
  const at::Tensor weight = at::randn({dim}).to(dtype);
  const at::Tensor sum = (x.to(at::kFloat) + residual.to(at::kFloat)).to(dtype);
  const at::Tensor expected = reference_rms_norm(sum, weight);
  add_rms_norm(x, residual, weight, kEps);
  EXPECT_TRUE(at::equal(residual, sum));
  EXPECT_LE(relative_error(x, expected), tolerance(dtype));
}

TEST_P(ElementWise, SiluAndMulMatchesActTimesUp) {
  const auto [dtype, dim] = GetParam();
  at::manual_seed(3);
  // Wide logits, so that both tails of the sigmoid and large products are covered; the
  // rows as a strided view, with padding after each.
  const at::Tensor wide = (at::randn({9, 2 * dim + 5}) * 8).to(dtype);
  const at::Tensor gate_up = wide.narrow(1, 0, 2 * dim);
  const at::Tensor expected = at::silu(gate_up.narrow(1, 0, dim)) * gate_up.narrow(1, dim, dim);
  const at::Tensor out = at::empty({9, dim}, dtype);
  silu_and_mul(out, gate_up);
  EXPECT_LE(relative_error(out, expected), tolerance(dtype));
}

TEST(ElementWise, SiluAndMulAtTheExtremes) {
  const at::Tensor gate = at::tensor({-1000.0f, -90.0f, 0.0f, 90.0f, 1000.0f, -0.5f, 3.0f, 20.0f,
                                      -20.0f, 1e-3f, -1e-3f, 50.0f, -50.0f, 7.0f, -7.0f, 0.25f, 2.0f});
  const at::Tensor gate_up = at::cat({gate, at::ones_like(gate)}).unsqueeze(0);
  const at::Tensor out = at::empty({1, gate.numel()});
  silu_and_mul(out, gate_up);
  EXPECT_LE(relative_error(out, at::silu(gate).unsqueeze(0)), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(DtypesAndWidths, ElementWise,
                         ::testing::Combine(::testing::Values(at::kFloat, at::kBFloat16, at::kHalf),
                                            ::testing::Values(int64_t{40}, int64_t{200})));

}  // namespace
}  // namespace nanovllm::kernels::cpu
