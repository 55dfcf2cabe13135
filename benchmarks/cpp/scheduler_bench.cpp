// The engine's own cost per decode step (scheduler, block manager, token bookkeeping,
// outputs) with many sequences decoding at once on the fake model runner, whose time is
// measured separately and left out.
//
//   scheduler_bench [num_seqs=256] [num_steps=2000] [prompt_len=128] [block_size=16]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <stdexcept>
#include <vector>

#include "nanovllm/llm_engine.h"
#include "testing/fake_model_runner.h"

namespace {

using Clock = std::chrono::steady_clock;
using nanovllm::testing::FakeModelRunner;

double micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

// Clocks the wrapped runner so that its time can be subtracted from the step's.
class TimedRunner : public nanovllm::ModelRunner {
 public:
  explicit TimedRunner(std::unique_ptr<nanovllm::ModelRunner> inner) : inner_(std::move(inner)) {}

  std::vector<nanovllm::SampledToken> execute(
      const std::vector<nanovllm::ScheduledChunk>& batch) override {
    const auto start = Clock::now();
    auto sampled = inner_->execute(batch);
    last_ = Clock::now() - start;
    return sampled;
  }
  int num_kvcache_blocks() const override { return inner_->num_kvcache_blocks(); }
  int block_size() const override { return inner_->block_size(); }
  nanovllm::ModelInfo model_info() const override { return inner_->model_info(); }
  Clock::duration last() const { return last_; }

 private:
  std::unique_ptr<nanovllm::ModelRunner> inner_;
  Clock::duration last_{};
};

int arg(int argc, char** argv, int index, int fallback) {
  return argc > index ? std::atoi(argv[index]) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const int num_seqs = arg(argc, argv, 1, 256);
  const int num_steps = arg(argc, argv, 2, 2000);
  const int prompt_len = arg(argc, argv, 3, 128);
  const int block_size = arg(argc, argv, 4, 16);
  const int num_warmup_steps = 50;
  const int max_tokens = num_warmup_steps + num_steps + 64;

  nanovllm::testing::FakeModelRunnerOptions options;
  options.block_size = block_size;
  options.vocab_size = 32000;
  options.max_position_embeddings = prompt_len + max_tokens;
  options.check_kv = false;
  options.num_blocks = num_seqs * ((prompt_len + max_tokens + block_size - 1) / block_size + 1);
  auto timed = std::make_unique<TimedRunner>(std::make_unique<FakeModelRunner>(options));
  TimedRunner& runner = *timed;

  nanovllm::EngineConfig config;
  config.max_num_seqs = num_seqs;
  config.max_num_batched_tokens = 8192;
  config.kvcache_block_size = block_size;
  nanovllm::LLMEngine engine(config, std::move(timed));

  // Prompts share a system prompt of half their length, as chat requests do.
  std::mt19937 rng(1);
  std::vector<int32_t> system(prompt_len / 2);
  for (int32_t& token : system) token = static_cast<int32_t>(rng() % 32000);
  nanovllm::SamplingParams params;
  params.max_tokens = max_tokens;
  params.ignore_eos = true;
  for (int i = 0; i < num_seqs; ++i) {
    std::vector<int32_t> prompt = system;
    while (static_cast<int>(prompt.size()) < prompt_len) {
      prompt.push_back(static_cast<int32_t>(rng() % 32000));
    }
    params.seed = i;
    engine.add_request(std::move(prompt), params);
  }

  // Prefill everything, then let decoding settle.
  int decoding = 0;
  while (decoding < num_seqs || engine.stats().num_waiting > 0) {
    decoding = static_cast<int>(engine.step().size());
  }
  for (int i = 0; i < num_warmup_steps; ++i) engine.step();

  std::vector<double> engine_us, runner_us;
  engine_us.reserve(num_steps);
  runner_us.reserve(num_steps);
  for (int i = 0; i < num_steps; ++i) {
    const auto start = Clock::now();
    const std::vector<nanovllm::RequestOutput> outputs = engine.step();
    const auto total = Clock::now() - start;
    if (static_cast<int>(outputs.size()) != num_seqs) {
      throw std::logic_error("a measured step did not decode every sequence");
    }
    engine_us.push_back(micros(total - runner.last()));
    runner_us.push_back(micros(runner.last()));
  }

  auto mean = [](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return sum / static_cast<double>(v.size());
  };
  auto percentile = [](std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1))];
  };
  const nanovllm::EngineStats stats = engine.stats();
  std::printf("scheduler_bench: %d sequences decoding, prompts of %d tokens, blocks of %d, "
              "%d measured steps, prefix caching on (%lld of %lld prompt tokens hit)\n",
              num_seqs, prompt_len, block_size, num_steps,
              static_cast<long long>(stats.prefix_cache_hits),
              static_cast<long long>(stats.prefix_cache_queries));
  std::printf("engine per decode step: mean %.1f us, p50 %.1f us, p99 %.1f us "
              "(fake runner, excluded: mean %.1f us)\n",
              mean(engine_us), percentile(engine_us, 0.5), percentile(engine_us, 0.99),
              mean(runner_us));
  return 0;
}
