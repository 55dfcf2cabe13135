#include "nanovllm/llm_engine.h"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "scheduler.h"
#include "testing/fake_model_runner.h"

namespace nanovllm {
namespace {

using testing::FakeModelRunner;
using testing::FakeModelRunnerOptions;

struct Harness {
  FakeModelRunner* runner;  // owned by the engine
  std::unique_ptr<LLMEngine> engine;
};

Harness make_engine(FakeModelRunnerOptions options = {}, EngineConfig config = {},
                    FakeModelRunner::TokenFn token_fn = {}) {
  config.kvcache_block_size = options.block_size;
  auto runner = std::make_unique<FakeModelRunner>(std::move(options), std::move(token_fn));
  FakeModelRunner* raw = runner.get();
  return {raw, std::make_unique<LLMEngine>(std::move(config), std::move(runner))};
}

std::vector<int32_t> tokens_from(int32_t first, int count) {
  std::vector<int32_t> tokens(count);
  std::iota(tokens.begin(), tokens.end(), first);
  return tokens;
}

SamplingParams params_with(int max_tokens, uint64_t seed = 1) {
  SamplingParams params;
  params.max_tokens = max_tokens;
  params.seed = seed;
  return params;
}

struct Result {
  std::vector<int32_t> tokens;
  FinishReason finish_reason = FinishReason::kNone;
  int num_cached_tokens = 0;
  int num_finished_outputs = 0;
};

std::map<int64_t, Result> run_to_completion(LLMEngine& engine) {
  std::map<int64_t, Result> results;
  for (int steps = 0; engine.has_unfinished(); ++steps) {
    if (steps > 10000) throw std::runtime_error("the engine did not finish");
    for (const RequestOutput& output : engine.step()) {
      Result& result = results[output.request_id];
      result.tokens.insert(result.tokens.end(), output.new_token_ids.begin(),
                           output.new_token_ids.end());
      result.num_cached_tokens = output.num_cached_tokens;
      if (output.finished) {
        result.finish_reason = output.finish_reason;
        ++result.num_finished_outputs;
      }
    }
  }
  return results;
}

// Runs `call`, which must throw std::invalid_argument whose message has every fragment.
void expect_invalid(const std::function<void()>& call, const std::vector<std::string>& fragments) {
  try {
    call();
    ADD_FAILURE() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    for (const std::string& fragment : fragments) {
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "\"" << fragment << "\" not in: " << message;
    }
  }
}

void expect_all_blocks_free(const LLMEngine& engine) {
  const BlockManager& blocks = engine.scheduler().block_manager();
  EXPECT_EQ(blocks.num_free_blocks(), blocks.num_blocks());
  for (int32_t block = 0; block < blocks.num_blocks(); ++block) {
    EXPECT_EQ(blocks.ref_count(block), 0) << "block " << block;
  }
}

// ---- construction -----------------------------------------------------------------------

TEST(LLMEngine, TakesCacheGeometryAndModelLimitFromTheRunner) {
  FakeModelRunnerOptions options;
  options.num_blocks = 37;
  options.max_position_embeddings = 512;
  Harness h = make_engine(options);
  EXPECT_EQ(h.engine->max_model_len(), 512);
  EXPECT_EQ(h.engine->config().num_kvcache_blocks, 37);
  EXPECT_EQ(h.engine->stats().num_kvcache_blocks, 37);
  EXPECT_EQ(h.engine->stats().num_free_blocks, 37);
}

TEST(LLMEngine, RejectsABlockSizeTheRunnerDoesNotUse) {
  EngineConfig config;
  config.kvcache_block_size = 32;
  auto runner = std::make_unique<FakeModelRunner>(FakeModelRunnerOptions{});  // blocks of 16
  expect_invalid([&] { LLMEngine engine(config, std::move(runner)); },
                 {"kvcache_block_size = 32", "blocks of 16 tokens"});
}

TEST(LLMEngine, RejectsMaxModelLenBeyondTheModel) {
  EngineConfig config;
  config.max_model_len = 5000;
  expect_invalid([&] { make_engine({}, config); },
                 {"max_model_len = 5000", "at most 4096", "max_position_embeddings"});
}

TEST(LLMEngine, RejectsAnInvalidConfig) {
  EngineConfig config;
  config.max_num_seqs = 0;
  expect_invalid([&] { make_engine({}, config); }, {"max_num_seqs = 0"});
}

// ---- add_request --------------------------------------------------------------------------

TEST(LLMEngine, RefusesARequestOverMaxModelLen) {
  EngineConfig config;
  config.max_model_len = 128;
  Harness h = make_engine({}, config);
  expect_invalid([&] { h.engine->add_request(tokens_from(1, 100), params_with(50)); },
                 {"prompt has 100 tokens, max_tokens 50, max_model_len 128"});
  expect_invalid([&] { h.engine->add_request(tokens_from(1, 128), params_with(1)); },
                 {"prompt has 128 tokens, max_tokens 1, max_model_len 128"});
  EXPECT_FALSE(h.engine->has_unfinished());
  EXPECT_EQ(h.engine->stats().num_waiting, 0);
  h.engine->add_request(tokens_from(1, 100), params_with(28));
  EXPECT_TRUE(h.engine->has_unfinished());
}

TEST(LLMEngine, RefusesARequestLargerThanTheWholeCache) {
  FakeModelRunnerOptions options;
  options.num_blocks = 4;  // 64 slots
  Harness h = make_engine(options);
  expect_invalid([&] { h.engine->add_request(tokens_from(1, 60), params_with(10)); },
                 {"needs 5 KV cache blocks", "prompt has 60 tokens, max_tokens 10",
                  "block size 16", "whole cache has 4"});
  EXPECT_FALSE(h.engine->has_unfinished());

  // The last sampled token needs no slot: 60 + 5 tokens fit 64 slots, and run alone.
  const int64_t id = h.engine->add_request(tokens_from(1, 60), params_with(5));
  const auto results = run_to_completion(*h.engine);
  EXPECT_EQ(results.at(id).tokens.size(), 5u);
  EXPECT_EQ(results.at(id).finish_reason, FinishReason::kLength);
}

TEST(LLMEngine, RefusesEmptyPromptsOutOfVocabularyTokensAndInvalidParams) {
  Harness h = make_engine();  // vocabulary of 1000
  expect_invalid([&] { h.engine->add_request({}, params_with(4)); }, {"prompt is empty"});
  expect_invalid([&] { h.engine->add_request({1, 1000}, params_with(4)); },
                 {"token id 1000 at position 1", "[0, 1000)"});
  expect_invalid([&] { h.engine->add_request({-1}, params_with(4)); }, {"token id -1"});
  SamplingParams bad = params_with(4);
  bad.top_p = 0.0f;
  expect_invalid([&] { h.engine->add_request({1, 2}, bad); }, {"top_p"});
  EXPECT_FALSE(h.engine->has_unfinished());
}

// ---- stop conditions ------------------------------------------------------------------------

constexpr int32_t kEos = 5;

// Outputs 10, 11, 12, ... and eos as the fourth token.
int32_t eos_fourth(const Sequence& seq) {
  return seq.num_output_tokens() == 3 ? kEos : 10 + seq.num_output_tokens();
}

Harness make_scripted(FakeModelRunner::TokenFn token_fn) {
  FakeModelRunnerOptions options;
  options.eos_token_ids = {kEos, 999};
  return make_engine(options, {}, std::move(token_fn));
}

TEST(LLMEngine, StopsAtEos) {
  Harness h = make_scripted(eos_fourth);
  const int64_t id = h.engine->add_request({1, 2, 3}, params_with(10));
  const Result result = run_to_completion(*h.engine).at(id);
  EXPECT_EQ(result.tokens, (std::vector<int32_t>{10, 11, 12, kEos}));
  EXPECT_EQ(result.finish_reason, FinishReason::kStop);
  EXPECT_EQ(result.num_finished_outputs, 1);
}

TEST(LLMEngine, IgnoreEosRunsToMaxTokens) {
  Harness h = make_scripted(eos_fourth);
  SamplingParams params = params_with(6);
  params.ignore_eos = true;
  const int64_t id = h.engine->add_request({1, 2, 3}, params);
  const Result result = run_to_completion(*h.engine).at(id);
  EXPECT_EQ(result.tokens, (std::vector<int32_t>{10, 11, 12, kEos, 14, 15}));
  EXPECT_EQ(result.finish_reason, FinishReason::kLength);
}

TEST(LLMEngine, StopsAtAStopTokenId) {
  Harness h = make_scripted(eos_fourth);
  SamplingParams params = params_with(10);
  params.stop_token_ids = {12};
  const int64_t id = h.engine->add_request({1, 2, 3}, params);
  const Result result = run_to_completion(*h.engine).at(id);
  EXPECT_EQ(result.tokens, (std::vector<int32_t>{10, 11, 12}));
  EXPECT_EQ(result.finish_reason, FinishReason::kStop);
}

TEST(LLMEngine, StopsAtMaxTokens) {
  Harness h = make_engine();
  const int64_t id = h.engine->add_request({1, 2, 3}, params_with(7));
  const Result result = run_to_completion(*h.engine).at(id);
  EXPECT_EQ(result.tokens.size(), 7u);
  EXPECT_EQ(result.finish_reason, FinishReason::kLength);
}

TEST(LLMEngine, EosAndStopIdsDoNotStopBeforeMinTokens) {
  // A runner that ignores the ban: the engine alone must keep the request going.
  Harness h = make_scripted([](const Sequence&) { return kEos; });
  SamplingParams params = params_with(10);
  params.min_tokens = 3;
  const int64_t eos_id = h.engine->add_request({1, 2, 3}, params);
  Harness s = make_scripted([](const Sequence&) { return 9; });
  params.stop_token_ids = {9};
  const int64_t stop_id = s.engine->add_request({1, 2, 3}, params);

  const Result eos = run_to_completion(*h.engine).at(eos_id);
  EXPECT_EQ(eos.tokens, (std::vector<int32_t>{kEos, kEos, kEos}));
  EXPECT_EQ(eos.finish_reason, FinishReason::kStop);
  const Result stop = run_to_completion(*s.engine).at(stop_id);
  EXPECT_EQ(stop.tokens, (std::vector<int32_t>{9, 9, 9}));
  EXPECT_EQ(stop.finish_reason, FinishReason::kStop);
}

TEST(LLMEngine, LogprobsArePassedThroughWhenAsked) {
  Harness h = make_engine();
  SamplingParams with = params_with(3);
  with.logprobs = 2;
  const int64_t asked = h.engine->add_request({1, 2, 3}, with);
  const int64_t not_asked = h.engine->add_request({1, 2, 3}, params_with(3));
  for (const RequestOutput& output : h.engine->step()) {
    if (output.request_id == asked) {
      EXPECT_EQ(output.new_logprobs.size(), 1u);
      ASSERT_EQ(output.new_top_logprobs.size(), 1u);
      EXPECT_EQ(output.new_top_logprobs[0].size(), 2u);
    } else {
      EXPECT_EQ(output.request_id, not_asked);
      EXPECT_TRUE(output.new_logprobs.empty());
      EXPECT_TRUE(output.new_top_logprobs.empty());
    }
  }
}

TEST(LLMEngine, SeedsMakeOutputsReproducible) {
  Harness h = make_engine();
  const int64_t a = h.engine->add_request({1, 2, 3}, params_with(8, /*seed=*/7));
  const int64_t b = h.engine->add_request({1, 2, 3}, params_with(8, /*seed=*/7));
  const int64_t c = h.engine->add_request({1, 2, 3}, params_with(8, /*seed=*/8));
  SamplingParams unseeded;
  unseeded.max_tokens = 8;
  const int64_t d = h.engine->add_request({1, 2, 3}, unseeded);
  const int64_t e = h.engine->add_request({1, 2, 3}, unseeded);
  const auto results = run_to_completion(*h.engine);
  EXPECT_EQ(results.at(a).tokens, results.at(b).tokens);
  EXPECT_NE(results.at(a).tokens, results.at(c).tokens);
  // Unseeded requests draw their own seeds.
  EXPECT_NE(results.at(d).tokens, results.at(e).tokens);
}

// ---- abort ----------------------------------------------------------------------------------

TEST(LLMEngine, AbortsWaitingAndRunningRequests) {
  EngineConfig config;
  config.max_num_seqs = 1;
  Harness h = make_engine({}, config);
  const int64_t running = h.engine->add_request(tokens_from(1, 20), params_with(50));
  const int64_t waiting = h.engine->add_request(tokens_from(1, 20), params_with(50));
  h.engine->step();
  ASSERT_EQ(h.engine->stats().num_running, 1);
  ASSERT_EQ(h.engine->stats().num_waiting, 1);

  EXPECT_TRUE(h.engine->abort(waiting));
  EXPECT_FALSE(h.engine->abort(waiting));
  EXPECT_EQ(h.engine->stats().num_waiting, 0);
  std::vector<RequestOutput> outputs = h.engine->step();
  ASSERT_EQ(outputs.size(), 2u);
  EXPECT_EQ(outputs[0].request_id, waiting);
  EXPECT_TRUE(outputs[0].finished);
  EXPECT_EQ(outputs[0].finish_reason, FinishReason::kAbort);
  EXPECT_TRUE(outputs[0].new_token_ids.empty());
  EXPECT_EQ(outputs[0].num_prompt_tokens, 20);
  EXPECT_EQ(outputs[1].request_id, running);
  EXPECT_FALSE(outputs[1].finished);

  // Blocks come back at once; the final output with the next step.
  EXPECT_TRUE(h.engine->abort(running));
  expect_all_blocks_free(*h.engine);
  EXPECT_EQ(h.engine->stats().num_running, 0);
  EXPECT_TRUE(h.engine->has_unfinished());
  outputs = h.engine->step();
  ASSERT_EQ(outputs.size(), 1u);
  EXPECT_EQ(outputs[0].request_id, running);
  EXPECT_EQ(outputs[0].finish_reason, FinishReason::kAbort);
  EXPECT_FALSE(h.engine->has_unfinished());
  EXPECT_FALSE(h.engine->abort(running));
  EXPECT_FALSE(h.engine->abort(12345));
}

TEST(LLMEngine, AllBlocksAreFreeAfterEveryRequestFinishesOrIsAborted) {
  FakeModelRunnerOptions options;
  options.num_blocks = 24;
  options.block_size = 4;
  EngineConfig config;
  config.max_num_batched_tokens = 16;
  Harness h = make_engine(options, config);
  std::vector<int64_t> ids;
  for (int i = 0; i < 12; ++i) {
    std::vector<int32_t> prompt = tokens_from(100, 8);  // a shared prefix
    prompt.push_back(i);
    ids.push_back(h.engine->add_request(std::move(prompt), params_with(6 + i, i)));
  }
  for (int i = 0; i < 5; ++i) h.engine->step();
  for (size_t i = 0; i < ids.size(); i += 3) h.engine->abort(ids[i]);
  const auto results = run_to_completion(*h.engine);
  EXPECT_EQ(results.size(), ids.size());
  for (const auto& [id, result] : results) EXPECT_EQ(result.num_finished_outputs, 1);
  expect_all_blocks_free(*h.engine);
  const EngineStats stats = h.engine->stats();
  EXPECT_EQ(stats.num_running + stats.num_waiting, 0);
  EXPECT_EQ(stats.kv_cache_usage, 0.0);
}

// ---- prefix sharing and stats ------------------------------------------------------------

TEST(LLMEngine, SiblingRequestsComputeTheirSharedPromptOnce) {
  Harness h = make_engine();  // blocks of 16
  const std::vector<int32_t> prompt = tokens_from(1, 40);
  std::vector<int64_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(h.engine->add_request(prompt, params_with(5, i)));
  const auto results = run_to_completion(*h.engine);

  // The first computes all 40 prompt tokens; the others reuse its two full blocks.
  EXPECT_EQ(results.at(ids[0]).num_cached_tokens, 0);
  for (size_t i = 1; i < ids.size(); ++i) EXPECT_EQ(results.at(ids[i]).num_cached_tokens, 32);
  const EngineStats stats = h.engine->stats();
  EXPECT_EQ(stats.prompt_tokens_total, 40 + 3 * 8);
  EXPECT_EQ(stats.prefix_cache_queries, 4 * 40);
  EXPECT_EQ(stats.prefix_cache_hits, 3 * 32);
  EXPECT_EQ(stats.generation_tokens_total, 4 * 5);
}

TEST(LLMEngine, StatsCountTokensStepsAndTheSharedSystemPrompt) {
  Harness h = make_engine();
  const std::vector<int32_t> system = tokens_from(500, 32);
  std::vector<int32_t> first = system, second = system;
  first.insert(first.end(), {1, 2, 3});
  second.insert(second.end(), {4, 5, 6, 7});

  h.engine->add_request(first, params_with(4));
  run_to_completion(*h.engine);
  const EngineStats after_first = h.engine->stats();
  EXPECT_EQ(after_first.num_steps, 4);  // one prefill, three decodes
  EXPECT_EQ(after_first.prompt_tokens_total, 35);
  EXPECT_EQ(after_first.generation_tokens_total, 4);
  EXPECT_EQ(after_first.prefix_cache_hits, 0);

  const int64_t id = h.engine->add_request(second, params_with(4));
  EXPECT_EQ(h.engine->stats().num_waiting, 1);
  const auto results = run_to_completion(*h.engine);
  EXPECT_EQ(results.at(id).num_cached_tokens, 32);
  const EngineStats stats = h.engine->stats();
  EXPECT_EQ(stats.prompt_tokens_total, 35 + 4);
  EXPECT_EQ(stats.generation_tokens_total, 8);
  EXPECT_EQ(stats.prefix_cache_queries, 35 + 36);
  EXPECT_EQ(stats.prefix_cache_hits, 32);
  EXPECT_EQ(stats.num_steps, 8);
  EXPECT_EQ(stats.num_preemptions, 0);
  EXPECT_EQ(stats.num_running + stats.num_waiting, 0);
  EXPECT_EQ(stats.kv_cache_usage, 0.0);
}

TEST(LLMEngine, CountsPreemptionsAndStillProducesTheSameTokens) {
  FakeModelRunnerOptions small;
  small.num_blocks = 6;
  small.block_size = 4;
  Harness tight = make_engine(small);
  Harness roomy = make_engine();
  for (Harness* h : {&tight, &roomy}) {
    for (int i = 0; i < 3; ++i) h->engine->add_request(tokens_from(10 * i, 7), params_with(12, i));
  }
  const auto tight_results = run_to_completion(*tight.engine);
  const auto roomy_results = run_to_completion(*roomy.engine);
  EXPECT_GT(tight.engine->stats().num_preemptions, 0);
  EXPECT_EQ(roomy.engine->stats().num_preemptions, 0);
  for (const auto& [id, result] : roomy_results) {
    EXPECT_EQ(tight_results.at(id).tokens, result.tokens) << "request " << id;
  }
  expect_all_blocks_free(*tight.engine);
}

}  // namespace
}  // namespace nanovllm
