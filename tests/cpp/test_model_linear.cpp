// Linear and the packed-weight GEMM behind it (kernels/cpu/packed_gemm.h): bfloat16 and
// weight-only int8 against float64 references for decode- and prefill-sized batches, odd
// shapes and bias, with both the AVX-512 and the portable loops; the quantizer; rows that do
// not depend on their batch; the embedding lookup of a tied LM head; tiny models run with
// int8 weights; and, where the real Qwen2.5-Coder-0.5B is prepared, its perplexity in int8
// against bfloat16.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "cpu/packed_gemm.h"
#include "linear.h"
#include "test_model_files.h"
#include "torch_model_runner.h"

namespace nanovllm {
namespace {

using kernels::cpu::GemmImpl;
using kernels::cpu::PackedWeight;

// Row counts of decode (1..8), the AVX-512 kernel's tile edges (6, 7, 8, 13) and prefill.
const std::vector<int64_t> kRows = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 64, 100};

struct Shape {
  int64_t in;
  int64_t out;
};
// Odd and even k (the last k pair half empty), n below, at and past the 16- and 64-wide tiles.
const std::vector<Shape> kShapes = {{37, 17}, {64, 64}, {130, 200}, {257, 1}, {896, 130}};

std::vector<GemmImpl> impls() { return {GemmImpl::kBest, GemmImpl::kScalar}; }
std::string name(GemmImpl impl) { return impl == GemmImpl::kBest ? "best" : "scalar"; }

at::Tensor dequantized(const PackedWeight& packed) {
  at::Tensor out = at::empty({packed.out_features, packed.in_features}, at::kFloat);
  kernels::cpu::packed_rows(out, packed, at::arange(packed.out_features));
  return out;
}

// out of packed_linear for bfloat16 x, in float32 or bfloat16.
at::Tensor run(const PackedWeight& packed, const at::Tensor& x, const at::Tensor& bias,
               at::ScalarType out_dtype, GemmImpl impl) {
  const at::Tensor out = at::empty({x.size(0), packed.out_features}, out_dtype);
  kernels::cpu::packed_linear(out, x, packed, bias, impl);
  return out;
}

// |a - b| <= atol + rtol * scale, element-wise; reports the worst element.
void expect_close(const at::Tensor& actual, const at::Tensor& expected, const at::Tensor& scale, double rtol,
                  double atol, const std::string& what) {
  const at::Tensor excess = (actual.to(at::kDouble) - expected).abs() - (atol + rtol * scale);
  const double worst = excess.max().item<double>();
  EXPECT_LE(worst, 0.0) << what << ": an element is off by " << worst << " beyond the bound";
}

TEST(PackedGemm, QuantizesEachOutputChannelOnItsOwnScale) {
  at::manual_seed(0);
  at::Tensor w = at::randn({70, 45}) * at::rand({70, 1}) * 3;
  w[5].zero_();
  w[9][4] = -50.0;  // an outlier sets its channel's scale alone
  const PackedWeight packed = kernels::cpu::quantize_int8(w);
  const at::Tensor scale = w.abs().amax(1) / 127.0;
  ASSERT_TRUE(at::allclose(packed.scales.narrow(0, 0, 70), scale));
  const at::Tensor q = (w / scale.clamp_min(1e-30).unsqueeze(1)).round();
  EXPECT_LE(q.abs().max().item<double>(), 127.0);
  EXPECT_TRUE(at::allclose(dequantized(packed), q * scale.unsqueeze(1), 0.0, 1e-6));
  EXPECT_EQ(dequantized(packed)[5].abs().max().item<double>(), 0.0);
  // Rounding to the nearest step: within half a step of the original.
  const at::Tensor steps = (dequantized(packed) - w).abs() / scale.clamp_min(1e-30).unsqueeze(1);
  EXPECT_LE(steps.max().item<double>(), 0.5 + 1e-5);
}

TEST(PackedGemm, Int8MatchesTheReferenceForEveryRowCount) {
  at::manual_seed(1);
  for (const Shape s : kShapes) {
    const at::Tensor w = at::randn({s.out, s.in}) * 0.05;
    const at::Tensor bias = at::randn({s.out});
    const PackedWeight packed = kernels::cpu::quantize_int8(w);
    const at::Tensor w_q = dequantized(packed).to(at::kDouble);
    const at::Tensor half_step = packed.scales.narrow(0, 0, s.out).to(at::kDouble) / 2;
    for (const int64_t m : kRows) {
      const at::Tensor x = at::randn({m, s.in}).to(at::kBFloat16);
      const at::Tensor xd = x.to(at::kDouble);
      // The kernel multiplies exact bfloat16 products and sums them in float32.
      const at::Tensor expected = at::addmm(bias.to(at::kDouble), xd, w_q.t());
      const at::Tensor magnitude = at::mm(xd.abs(), w_q.abs().t()) + bias.to(at::kDouble).abs();
      for (const GemmImpl impl : impls()) {
        const std::string what = name(impl) + " " + std::to_string(m) + "x" + std::to_string(s.in) + "->" +
                                 std::to_string(s.out);
        const at::Tensor out = run(packed, x, bias, at::kFloat, impl);
        expect_close(out, expected, magnitude, 1e-5, 1e-6, what + " float32");
        expect_close(run(packed, x, bias, at::kBFloat16, impl), expected, magnitude, 1.0 / 128, 1e-6,
                     what + " bfloat16");
        // Against the float weights: per-channel rounding moves each product by at most
        // |x| · half a step, so the error is bounded by Σ|x| · scale / 2.
        const at::Tensor exact = at::addmm(bias.to(at::kDouble), xd, w.to(at::kDouble).t());
        const at::Tensor bound = xd.abs().sum(1, true) * half_step.unsqueeze(0);
        const double sum_error = 1e-5 * magnitude.max().item<double>();
        expect_close(out, exact, bound, 1.0, sum_error, what + " vs float weights");
      }
    }
  }
}

TEST(PackedGemm, Bfloat16MatchesTheReferenceForEveryRowCount) {
  at::manual_seed(2);
  for (const Shape s : kShapes) {
    const at::Tensor w = (at::randn({s.out, s.in}) * 0.05).to(at::kBFloat16);
    const PackedWeight packed = kernels::cpu::pack_bfloat16(w);
    const at::Tensor wd = w.to(at::kDouble);
    for (const int64_t m : kRows) {
      const at::Tensor x = at::randn({m, s.in}).to(at::kBFloat16);
      const at::Tensor expected = at::mm(x.to(at::kDouble), wd.t());
      const at::Tensor magnitude = at::mm(x.to(at::kDouble).abs(), wd.abs().t());
      for (const GemmImpl impl : impls()) {
        const std::string what = name(impl) + " " + std::to_string(m) + "x" + std::to_string(s.in);
        expect_close(run(packed, x, at::Tensor(), at::kFloat, impl), expected, magnitude, 1e-5, 1e-6, what);
      }
    }
  }
}

TEST(PackedGemm, ARowsResultDoesNotDependOnItsBatch) {
  at::manual_seed(3);
  const at::Tensor w = at::randn({200, 131}) * 0.05;
  const at::Tensor bias = at::randn({200});
  // 37 rows take the kernel's widened-int8 path and row tiles of 6; one row takes neither.
  const at::Tensor x = at::randn({37, 131}).to(at::kBFloat16);
  for (const PackedWeight& packed : {kernels::cpu::quantize_int8(w), kernels::cpu::pack_bfloat16(w)}) {
    const at::Tensor batched = run(packed, x, bias, at::kFloat, GemmImpl::kBest);
    for (int64_t i = 0; i < x.size(0); ++i) {
      const at::Tensor alone = run(packed, x.narrow(0, i, 1), bias, at::kFloat, GemmImpl::kBest);
      ASSERT_TRUE(at::equal(alone[0], batched[i])) << "row " << i;
    }
  }
}

TEST(PackedGemm, TakesActivationsWithARowStride) {
  at::manual_seed(4);
  const at::Tensor w = at::randn({70, 40}) * 0.05;
  const PackedWeight packed = kernels::cpu::quantize_int8(w);
  const at::Tensor wide = at::randn({5, 64}).to(at::kBFloat16);
  const at::Tensor x = wide.narrow(1, 3, 40);  // a view, rows 64 apart
  EXPECT_TRUE(at::equal(run(packed, x, at::Tensor(), at::kFloat, GemmImpl::kBest),
                        run(packed, x.contiguous(), at::Tensor(), at::kFloat, GemmImpl::kBest)));
}

TEST(Linear, RunsEveryModelDtypeWithEachWeightFormat) {
  at::manual_seed(5);
  const at::Tensor w = at::randn({96, 72}) * 0.05;
  const at::Tensor bias = at::randn({96});
  const at::Tensor x = at::randn({9, 72});
  const at::Tensor exact = at::addmm(bias.to(at::kDouble), x.to(at::kDouble), w.to(at::kDouble).t());
  for (const LinearImpl impl : {LinearImpl::kAuto, LinearImpl::kATen}) {
    for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      for (const Quantization quantization : {Quantization::kNone, Quantization::kInt8}) {
        const Linear linear(w.to(dtype), bias.to(dtype), quantization, impl);
        EXPECT_EQ(linear.out_features(), 96);
        const at::Tensor out = linear(x.to(dtype));
        EXPECT_EQ(out.scalar_type(), dtype);
        EXPECT_EQ(out.sizes(), (at::IntArrayRef{9, 96}));
        // The float32 logits form, as the LM head writes them.
        const at::Tensor logits = at::empty({9, 96}, at::kFloat);
        linear(x.to(dtype), logits);
        // int8 steps are max|w| / 127 per channel; bfloat16 keeps 8 significant bits.
        const double tolerance =
            quantization == Quantization::kInt8 ? 0.03 : (dtype == at::kFloat ? 1e-5 : 0.01);
        const std::string what = std::string(c10::toString(dtype)) +
                                 (quantization == Quantization::kInt8 ? " int8" : "") +
                                 (impl == LinearImpl::kATen ? " (ATen)" : "");
        for (const at::Tensor& result : {out, logits}) {
          EXPECT_LT(((result.to(at::kDouble) - exact).norm() / exact.norm()).item<double>(), tolerance)
              << what;
        }
      }
    }
  }
}

TEST(Linear, RowsAreTheEmbeddingLookupOfTheWeight) {
  at::manual_seed(6);
  const at::Tensor w = at::randn({150, 33});
  const at::Tensor ids = at::tensor({149, 0, 64, 64, 7}, at::kInt);
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const Linear linear(w.to(dtype), at::Tensor());
    const at::Tensor out = at::empty({5, 33}, dtype);
    linear.rows(out, ids);
    EXPECT_TRUE(at::equal(out, w.to(dtype).index_select(0, ids.to(at::kLong)))) << c10::toString(dtype);
  }
  for (const LinearImpl impl : {LinearImpl::kAuto, LinearImpl::kATen}) {
    const Linear int8(w.to(at::kBFloat16), at::Tensor(), Quantization::kInt8, impl);
    const at::Tensor out = at::empty({5, 33}, at::kBFloat16);
    int8.rows(out, ids);
    const at::Tensor expected = w.index_select(0, ids.to(at::kLong));
    const at::Tensor step = expected.abs().amax(1, true) / 127;
    // Half a step of rounding to int8, then bfloat16's (at most 2^-8 relative) of 127 steps
    // (twice: the ATen path's scales are bfloat16 too).
    EXPECT_LE(((out.to(at::kFloat) - expected).abs() / step).max().item<double>(),
              impl == LinearImpl::kATen ? 1.5 : 1.0)
        << (impl == LinearImpl::kATen ? "ATen" : "packed");
  }
}

// ---- through the model runner ------------------------------------------------------

EngineConfig config_for(const std::filesystem::path& dir, const std::string& dtype,
                        const std::string& quantization) {
  EngineConfig config;
  config.model = dir.string();
  config.dtype = dtype;
  config.quantization = quantization;
  config.kvcache_block_size = 16;
  config.num_kvcache_blocks = 64;
  return config;
}

// Feeds each text through the runner one token per step (all texts in the same steps, as
// decode would) and returns, per text, the log-probabilities [length - 1, vocab] the model
// gives each position's successor.
std::vector<at::Tensor> teacher_forced(TorchModelRunner& runner,
                                       const std::vector<std::vector<int32_t>>& texts) {
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  std::vector<std::unique_ptr<Sequence>> seqs;
  std::vector<std::vector<at::Tensor>> rows(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    seqs.push_back(
        std::make_unique<Sequence>(static_cast<int64_t>(i), std::vector<int32_t>{texts[i][0]}, greedy, 0));
  }
  int next_block = runner.num_kvcache_blocks();
  for (size_t pos = 1;; ++pos) {
    std::vector<ScheduledChunk> batch;
    std::vector<size_t> which;
    for (size_t i = 0; i < texts.size(); ++i) {
      if (pos >= texts[i].size()) continue;
      Sequence& seq = *seqs[i];
      while (static_cast<int>(seq.block_table().size()) * runner.block_size() < seq.num_tokens()) {
        seq.mutable_block_table().push_back(--next_block);
      }
      batch.push_back({&seq, 1, true});
      which.push_back(i);
    }
    if (batch.empty()) break;
    runner.execute(batch);
    const at::Tensor logprobs = at::log_softmax(runner.last_logits(), 1);
    for (size_t j = 0; j < which.size(); ++j) {
      Sequence& seq = *seqs[which[j]];
      rows[which[j]].push_back(logprobs[static_cast<int64_t>(j)].clone());
      seq.set_num_computed_tokens(seq.num_tokens());
      seq.append_token(texts[which[j]][pos]);
    }
  }
  std::vector<at::Tensor> out;
  for (const auto& r : rows) out.push_back(at::stack(r));
  return out;
}

double perplexity(const std::vector<at::Tensor>& logprobs, const std::vector<std::vector<int32_t>>& texts) {
  double sum = 0.0;
  int64_t count = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const at::Tensor next = at::tensor(std::vector<int64_t>(texts[i].begin() + 1, texts[i].end()));
    sum += logprobs[i].gather(1, next.unsqueeze(1)).sum().item<double>();
    count += next.numel();
  }
  return std::exp(-sum / static_cast<double>(count));
}

TEST(Int8Model, TinyModelsStayCloseToTheirUnquantizedSelves) {
  // Untied float32 Qwen2 (biases) and a tied bfloat16 Llama (the embedding lookup goes
  // through the quantized LM head).
  using Case = std::pair<std::string, std::string>;
  const std::vector<Case> cases = {{"Qwen2ForCausalLM", "float32"}, {"LlamaForCausalLM", "bfloat16"}};
  for (const auto& [architecture, dtype] : cases) {
    testing::TempDir dir;
    nlohmann::json config = testing::tiny_config(architecture);
    config["tie_word_embeddings"] = dtype == "bfloat16";
    testing::write_tiny_model(dir.path(), config);
    at::manual_seed(7);
    const at::Tensor ids = at::randint(3, 97, {2, 24}, at::kInt);
    const std::vector<std::vector<int32_t>> texts = {
        std::vector<int32_t>(ids[0].data_ptr<int32_t>(), ids[0].data_ptr<int32_t>() + 24),
        std::vector<int32_t>(ids[1].data_ptr<int32_t>(), ids[1].data_ptr<int32_t>() + 24)};
    TorchModelRunner plain(config_for(dir.path(), dtype, ""));
    TorchModelRunner int8(config_for(dir.path(), dtype, "int8"));
    const std::vector<at::Tensor> expected = teacher_forced(plain, texts);
    const std::vector<at::Tensor> actual = teacher_forced(int8, texts);
    for (size_t i = 0; i < texts.size(); ++i) {
      // Mean KL(plain || int8) over the positions: the tied tiny model's distributions are
      // so peaked that single positions are noisy.
      const double kl = (expected[i].exp() * (expected[i] - actual[i])).sum(1).mean().item<double>();
      EXPECT_LT(kl, 0.02) << architecture << " text " << i;
    }
  }
}

// A paragraph of English and a Python function, tokenized with the Qwen2.5 tokenizer:
//
// The lighthouse keeper woke before dawn, as he had every morning for thirty years. He
// climbed the spiral stairs, trimmed the wick and watched the beam sweep across the grey
// water. Ships no longer needed him; satellites and radar had taken over his work long ago.
// Still, the town paid him to keep the light burning, because people liked to see it from
// the harbour at night. In the afternoons he repaired nets for the fishermen and wrote
// letters to his daughter, who lived in a city far inland and had never learned to swim.
//
// def merge_sorted(a, b):
//     """Merge two sorted lists into one sorted list."""
//     result = []
//     i = j = 0
//     while i < len(a) and j < len(b):
//         if a[i] <= b[j]:
//             result.append(a[i])
//             i += 1
//         else:
//             result.append(b[j])
//             j += 1
//     result.extend(a[i:])
//     result.extend(b[j:])
//     return result
const std::vector<std::vector<int32_t>> kQwenTexts = {
    {785,   326,   57909, 53416, 38726, 1573,  38393, 11,    438,   566,   1030,  1449,  6556,  369,   26127,
     1635,  13,    1260,  44419, 279,   41097, 31149, 11,    50981, 279,   289,   865,   323,   15384, 279,
     23418, 23146, 3941,  279,   19780, 3015,  13,    73532, 902,   5021,  4362,  1435,  26,    46610, 323,
     27508, 1030,  4429,  916,   806,   975,   1293,  4134,  13,    16377, 11,    279,   6290,  7171,  1435,
     311,   2506,  279,   3100,  19675, 11,    1576,  1251,  14915, 311,   1490,  432,   504,   279,   74642,
     518,   3729,  13,    758,   279,   1283,  2152,  2382,  566,   51734, 52457, 369,   279,   73193, 323,
     6139,  11931, 311,   806,   9803,  11,    879,   12163, 304,   264,   3283,  3041,  76189, 323,   1030,
     2581,  9498,  311,   16191, 13},
    {750,  10880, 41277, 2877, 11,   293,  982,   262,   4210, 52096, 1378, 10615, 11469, 1119, 825,  10615,
     1140, 14442, 262,   1102, 284,  4167, 262,   600,   284,  502,   284,  220,   15,    198,  262,  1393,
     600,  366,   2422,  2877, 8,    323,  502,   366,   2422, 1883,  982,  286,   421,   264,  989,  60,
     2651, 293,   3809,  10343, 310, 1102, 2057,  2877,  989,  2546,  310,  600,   1421,  220,  16,   198,
     286,  770,   510,   310,  1102, 2057, 1883,  3809,  2546, 310,   502,  1421,  220,   16,   198,  262,
     1102, 15831, 2877,  989,  43057, 262, 1102,  15831, 1883, 3809,  43057, 262,  470,   1102, 198}};

std::filesystem::path model_cache() {
  const char* env = std::getenv("NANOVLLM_CACHE");
  if (env != nullptr && *env != '\0') return env;
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home != nullptr ? home : "") / ".cache" / "nanovllm";
}

TEST(Int8Model, QwenPerplexityStaysWithinFivePercentOfBfloat16) {
  const std::filesystem::path dir = model_cache() / "models" / "Qwen2.5-Coder-0.5B-Instruct";
  if (!std::filesystem::exists(dir / "config.json")) {
    GTEST_SKIP() << "no prepared Qwen2.5-Coder-0.5B-Instruct at " << dir << " (nanovllm models prepare)";
  }
  std::vector<at::Tensor> bf16;
  {
    TorchModelRunner runner(config_for(dir, "bfloat16", ""));
    bf16 = teacher_forced(runner, kQwenTexts);
  }
  TorchModelRunner runner(config_for(dir, "bfloat16", "int8"));
  const std::vector<at::Tensor> int8 = teacher_forced(runner, kQwenTexts);
  const at::Tensor p = at::cat(bf16), q = at::cat(int8);
  const double kl = (p.exp() * (p - q)).sum(1).mean().item<double>();
  const double top1 = p.argmax(1).eq(q.argmax(1)).to(at::kDouble).mean().item<double>();
  std::cout << "Qwen2.5-Coder-0.5B, " << p.size(0) << " teacher-forced tokens: perplexity bfloat16 "
            << perplexity(bf16, kQwenTexts) << ", int8 " << perplexity(int8, kQwenTexts)
            << "; mean KL(bfloat16 || int8) " << kl << "; same top-1 " << top1 << "\n";
  EXPECT_LT(perplexity(int8, kQwenTexts), 1.05 * perplexity(bf16, kQwenTexts));
  EXPECT_LT(kl, 0.01);
}

}  // namespace
}  // namespace nanovllm
