// The linear layer's candidates on Qwen2.5-0.5B's projection shapes, for decode-sized (1-16
// rows) and prefill-sized (64-1024 rows) inputs, in one process:
//   at::linear        bfloat16 weights as loaded (oneDNN reorders them on every call)
//   oneDNN packed     bfloat16 weights reordered once (mkldnn::_reorder_linear_weight) and
//                     run by mkldnn::_linear_pointwise, as torch.compile's CPU path does
//   ours bf16 / int8  Linear: the packed-weight kernel (kernels/cpu/packed_gemm.h)
//   int8pack_mm       ATen's weight-only int8 kernel (at::_weight_int8pack_mm)
// Each candidate cycles through enough copies of the weight (>= 160 MB) that small row
// counts read it from memory, as decode does; the figure is the best of 8 windows.
//
//   linear_bench [rows,rows,...] [shape,shape,...]     e.g. linear_bench 1,4 gate_up,lm_head
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "linear.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  const char* name;
  int64_t in;
  int64_t out;
};
const std::vector<Shape> kShapes = {
    {"qkv", 896, 1152}, {"o", 896, 896}, {"gate_up", 896, 9728}, {"down", 4864, 896}, {"lm_head", 896, 151936}};

// Seconds per call: the best of 8 windows, cycling through `calls` (one per weight copy).
double best_seconds(const std::vector<std::function<void()>>& calls, double budget_s = 0.4) {
  for (const auto& call : calls) call();
  double best = 1e30;
  size_t next = 0;
  for (int window = 0; window < 8; ++window) {
    const auto start = Clock::now();
    int n = 0;
    double elapsed = 0;
    while (elapsed < budget_s / 8 || n < static_cast<int>(calls.size())) {
      calls[next++ % calls.size()]();
      ++n;
      elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    }
    best = std::min(best, elapsed / n);
  }
  return best;
}

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, ',');) parts.push_back(part);
  return parts;
}

}  // namespace

int main(int argc, char** argv) {
  using nanovllm::Linear;
  using nanovllm::Quantization;
  c10::InferenceMode inference;
  std::vector<int64_t> rows = {1, 4, 16, 64, 256, 1024};
  if (argc > 1) {
    rows.clear();
    for (const std::string& r : split(argv[1])) rows.push_back(std::stoll(r));
  }
  const std::vector<std::string> only = argc > 2 ? split(argv[2]) : std::vector<std::string>{};

  using LinearList = c10::List<std::optional<c10::Scalar>>;
  const auto reorder = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("mkldnn::_reorder_linear_weight", "")
                           .typed<at::Tensor(const at::Tensor&, std::optional<int64_t>)>();
  const auto packed_linear =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            c10::string_view, LinearList, std::optional<c10::string_view>)>();

  std::printf("%d threads; ms per call (GB/s of weights for <= 16 rows, TFLOP/s above)\n",
              at::get_num_threads());
  std::printf("%-8s %5s | %16s %16s %16s %16s %16s\n", "shape", "rows", "at::linear", "oneDNN packed",
              "ours bf16", "ours int8", "int8pack_mm");
  for (const Shape& s : kShapes) {
    if (!only.empty() && std::find(only.begin(), only.end(), s.name) == only.end()) continue;
    const int copies = static_cast<int>(std::max<int64_t>(1, 160'000'000 / (s.in * s.out * 2)));
    std::vector<at::Tensor> weights, int8_weights, int8_scales;
    std::vector<Linear> bf16_layers, int8_layers;
    for (int c = 0; c < copies; ++c) {
      const at::Tensor w = (at::randn({s.out, s.in}) * 0.02).to(at::kBFloat16);
      weights.push_back(w);
      bf16_layers.emplace_back(w, at::Tensor());
      int8_layers.emplace_back(w, at::Tensor(), Quantization::kInt8);
      const at::Tensor scale = w.to(at::kFloat).abs().amax(1) / 127;
      int8_weights.push_back((w.to(at::kFloat) / scale.unsqueeze(1)).round().to(at::kChar));
      int8_scales.push_back(scale.to(at::kBFloat16));
    }
    for (const int64_t m : rows) {
      const at::Tensor x = at::randn({m, s.in}).to(at::kBFloat16);
      std::vector<at::Tensor> reordered;
      for (const at::Tensor& w : weights) reordered.push_back(reorder.call(w, m));
      std::vector<std::function<void()>> aten, onednn, ours_bf16, ours_int8, int8pack;
      for (int c = 0; c < copies; ++c) {
        aten.push_back([&, c] { at::linear(x, weights[c]); });
        onednn.push_back([&, c] { packed_linear.call(x, reordered[c], std::nullopt, "none", LinearList(), std::nullopt); });
        ours_bf16.push_back([&, c] { bf16_layers[c](x); });
        ours_int8.push_back([&, c] { int8_layers[c](x); });
        int8pack.push_back([&, c] { at::_weight_int8pack_mm(x, int8_weights[c], int8_scales[c]); });
      }
      const double bytes = 2.0 * s.in * s.out, flops = 2.0 * m * s.in * s.out;
      std::printf("%-8s %5ld |", s.name, static_cast<long>(m));
      for (const auto* calls : {&aten, &onednn, &ours_bf16, &ours_int8, &int8pack}) {
        // ATen's int8 kernel takes minutes on the LM head with many rows.
        if (calls == &int8pack && m > 64 && s.out > 100'000) {
          std::printf(" %16s", "-");
          continue;
        }
        const double t = best_seconds(*calls);
        // int8 reads half the bytes; GB/s counts what each format actually reads.
        const double read = (calls == &ours_int8 || calls == &int8pack) ? bytes / 2 : bytes;
        std::printf(" %8.3f (%5.*f)", t * 1e3, m <= 16 ? 1 : 3, m <= 16 ? read / t * 1e-9 : flops / t * 1e-12);
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
}
