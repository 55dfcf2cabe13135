// Random arrivals, aborts, shared prefixes and lengths, on caches from tight (preempting
// every few steps) to roomy: the engine's invariants hold after every step, and every
// request gets the same tokens whatever the cache size, chunk size or prefix caching.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "nanovllm/llm_engine.h"
#include "scheduler.h"
#include "testing/fake_model_runner.h"

namespace nanovllm {
namespace {

using testing::FakeModelRunner;
using testing::FakeModelRunnerOptions;

constexpr int kVocabSize = 64;
constexpr int32_t kEos = 0;
constexpr int kNumArrivalSteps = 1000;
// Every request fits 64 slots: the tightest cache below, 16 blocks of 4.
constexpr int kMaxSlots = 64;

struct Request {
  int arrival_step;
  std::vector<int32_t> prompt;
  SamplingParams params;
  int abort_step;  // -1: never aborted
};

std::vector<Request> make_workload(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };
  auto random_tokens = [&](int n) {
    std::vector<int32_t> tokens(n);
    for (int32_t& token : tokens) token = uniform(1, kVocabSize - 1);
    return tokens;
  };

  std::vector<std::vector<int32_t>> system_prompts;
  for (int i = 0; i < 4; ++i) system_prompts.push_back(random_tokens(uniform(4, 24)));

  std::vector<Request> requests;
  for (int i = 0; i < 500; ++i) {
    Request request;
    request.arrival_step = uniform(0, kNumArrivalSteps - 1);
    if (!requests.empty() && chance(0.15)) {
      // A sibling (n > 1) or a repeated question: the same prompt at the same moment.
      const Request& earlier = requests[uniform(0, static_cast<int>(requests.size()) - 1)];
      request.arrival_step = earlier.arrival_step;
      request.prompt = earlier.prompt;
    } else {
      if (chance(0.7)) request.prompt = system_prompts[uniform(0, 3)];
      const int suffix = uniform(request.prompt.empty() ? 1 : 0, 16);
      const std::vector<int32_t> tail = random_tokens(suffix);
      request.prompt.insert(request.prompt.end(), tail.begin(), tail.end());
    }
    const int prompt_len = static_cast<int>(request.prompt.size());
    request.params.max_tokens = uniform(1, std::min(48, kMaxSlots + 1 - prompt_len));
    request.params.seed = rng();
    request.params.ignore_eos = chance(0.3);
    if (chance(0.2)) request.params.min_tokens = uniform(0, request.params.max_tokens);
    if (chance(0.2)) request.params.stop_token_ids = {uniform(1, kVocabSize - 1)};
    request.abort_step = chance(0.1) ? request.arrival_step + uniform(0, 30) : -1;
    requests.push_back(std::move(request));
  }
  std::ranges::stable_sort(requests, {}, &Request::arrival_step);
  return requests;
}

struct Expected {
  std::vector<int32_t> tokens;
  FinishReason finish_reason;
};

// What the fake model generates for the request on its own, with the stop rules spelled out
// independently of the engine.
Expected reference_output(const FakeModelRunner& model, const Request& request) {
  const SamplingParams& params = request.params;
  std::vector<int32_t> tokens = request.prompt;
  const int num_prompt = static_cast<int>(tokens.size());
  for (;;) {
    const int32_t token = model.next_token(tokens, num_prompt, params, *params.seed);
    tokens.push_back(token);
    const int num_output = static_cast<int>(tokens.size()) - num_prompt;
    std::vector<int32_t> output(tokens.begin() + num_prompt, tokens.end());
    if (num_output >= params.min_tokens) {
      const bool eos = !params.ignore_eos && token == kEos;
      const bool stop_id = std::ranges::count(params.stop_token_ids, token) > 0;
      if (eos || stop_id) return {output, FinishReason::kStop};
    }
    if (num_output >= params.max_tokens) return {output, FinishReason::kLength};
  }
}

struct CacheConfig {
  int num_blocks;
  int block_size;
  int max_num_batched_tokens;
  bool prefix_caching;

  std::string name() const {
    return std::to_string(num_blocks) + " blocks of " + std::to_string(block_size) + ", " +
           std::to_string(max_num_batched_tokens) + " tokens per step, prefix caching " +
           (prefix_caching ? "on" : "off");
  }
};

struct Outcome {
  std::vector<int32_t> tokens;
  FinishReason finish_reason = FinishReason::kNone;
  int num_final_outputs = 0;
};

struct RunSummary {
  std::vector<Outcome> outcomes;  // by workload index
  int num_steps = 0;
  int64_t num_preemptions = 0;
  int64_t prefix_cache_hits = 0;
};

constexpr int kMaxNumSeqs = 8;

// The engine's bookkeeping after a step: blocks conserved, reference counts equal to the
// number of sequences holding each block, every live request queued exactly once.
void check_invariants(const LLMEngine& engine, const FakeModelRunner& runner,
                      const std::set<int64_t>& live, const CacheConfig& config) {
  const Scheduler& scheduler = engine.scheduler();
  const BlockManager& blocks = scheduler.block_manager();

  std::vector<int> owners(blocks.num_blocks(), 0);
  std::multiset<int64_t> queued;
  for (const Sequence* seq : scheduler.running()) {
    queued.insert(seq->id());
    ASSERT_EQ(seq->status(), SequenceStatus::kRunning);
    ASSERT_GE(static_cast<int>(seq->block_table().size()) * blocks.block_size(),
              seq->num_computed_tokens());
    std::set<int32_t> distinct(seq->block_table().begin(), seq->block_table().end());
    ASSERT_EQ(distinct.size(), seq->block_table().size()) << "a block twice in one table";
    for (int32_t block : seq->block_table()) ++owners[block];
  }
  for (const Sequence* seq : scheduler.waiting()) {
    queued.insert(seq->id());
    ASSERT_EQ(seq->status(), SequenceStatus::kWaiting);
    ASSERT_TRUE(seq->block_table().empty());
    ASSERT_EQ(seq->num_computed_tokens(), 0);
  }
  ASSERT_EQ(queued, std::multiset<int64_t>(live.begin(), live.end()))
      << "a request was lost or queued twice";
  ASSERT_LE(static_cast<int>(scheduler.running().size()), kMaxNumSeqs);

  int num_used = 0;
  for (int32_t block = 0; block < blocks.num_blocks(); ++block) {
    ASSERT_EQ(blocks.ref_count(block), owners[block]) << "block " << block;
    num_used += owners[block] > 0;
  }
  ASSERT_EQ(num_used + blocks.num_free_blocks(), blocks.num_blocks());

  int batched = 0;
  for (const testing::ChunkRecord& chunk : runner.last_batch()) batched += chunk.num_tokens;
  ASSERT_LE(batched, config.max_num_batched_tokens);
}

RunSummary run_workload(const std::vector<Request>& requests, const CacheConfig& config) {
  FakeModelRunnerOptions options;
  options.num_blocks = config.num_blocks;
  options.block_size = config.block_size;
  options.vocab_size = kVocabSize;
  options.max_position_embeddings = 128;
  options.eos_token_ids = {kEos};
  auto owned_runner = std::make_unique<FakeModelRunner>(options);
  const FakeModelRunner& runner = *owned_runner;
  EngineConfig engine_config;
  engine_config.max_num_seqs = kMaxNumSeqs;
  engine_config.max_num_batched_tokens = config.max_num_batched_tokens;
  engine_config.kvcache_block_size = config.block_size;
  engine_config.enable_prefix_caching = config.prefix_caching;
  LLMEngine engine(engine_config, std::move(owned_runner));

  RunSummary summary;
  summary.outcomes.resize(requests.size());
  std::map<int64_t, size_t> index_of;
  std::map<size_t, int64_t> id_of;
  std::set<int64_t> live;
  size_t next = 0;
  for (int step = 0; next < requests.size() || engine.has_unfinished(); ++step) {
    if (step > 50 * kNumArrivalSteps) {
      ADD_FAILURE() << "the engine did not finish";
      return summary;
    }
    for (; next < requests.size() && requests[next].arrival_step <= step; ++next) {
      const int64_t id = engine.add_request(requests[next].prompt, requests[next].params);
      index_of[id] = next;
      id_of[next] = id;
      live.insert(id);
    }
    for (size_t i = 0; i < next; ++i) {
      if (requests[i].abort_step != step) continue;
      const int64_t id = id_of.at(i);
      EXPECT_EQ(engine.abort(id), live.contains(id));
      live.erase(id);
    }

    std::set<int64_t> seen;
    for (const RequestOutput& output : engine.step()) {
      EXPECT_TRUE(seen.insert(output.request_id).second) << "two outputs for one request";
      Outcome& outcome = summary.outcomes[index_of.at(output.request_id)];
      EXPECT_EQ(outcome.num_final_outputs, 0) << "output after the final one";
      EXPECT_LE(output.new_token_ids.size(), 1u);
      const Request& request = requests[index_of.at(output.request_id)];
      EXPECT_EQ(output.num_prompt_tokens, static_cast<int>(request.prompt.size()));
      EXPECT_LE(output.num_cached_tokens, output.num_prompt_tokens);
      outcome.tokens.insert(outcome.tokens.end(), output.new_token_ids.begin(),
                            output.new_token_ids.end());
      if (output.finished) {
        outcome.finish_reason = output.finish_reason;
        ++outcome.num_final_outputs;
        live.erase(output.request_id);
      }
    }
    check_invariants(engine, runner, live, config);
    if (::testing::Test::HasFatalFailure()) return summary;
    summary.num_steps = step + 1;
  }

  const BlockManager& blocks = engine.scheduler().block_manager();
  EXPECT_EQ(blocks.num_free_blocks(), blocks.num_blocks());
  for (int32_t block = 0; block < blocks.num_blocks(); ++block) {
    EXPECT_EQ(blocks.ref_count(block), 0);
  }
  summary.num_preemptions = engine.stats().num_preemptions;
  summary.prefix_cache_hits = engine.stats().prefix_cache_hits;
  return summary;
}

TEST(EngineRandomized, SameTokensAndSoundBookkeepingWhateverTheCache) {
  const std::vector<CacheConfig> configs = {
      {16, 4, 8, true},   {16, 4, 64, true},   {16, 4, 8, false},  {16, 4, 64, false},
      {40, 4, 8, true},   {40, 4, 64, true},   {40, 4, 8, false},  {40, 4, 64, false},
      {400, 4, 8, true},  {400, 4, 64, true},  {400, 4, 8, false}, {400, 4, 64, false},
      {100, 16, 2048, true},
  };
  FakeModelRunnerOptions reference_options;
  reference_options.vocab_size = kVocabSize;
  reference_options.eos_token_ids = {kEos};
  const FakeModelRunner reference_model(reference_options);

  for (uint64_t workload_seed : {1u, 2u}) {
    const std::vector<Request> requests = make_workload(workload_seed);
    std::vector<Expected> expected;
    for (const Request& request : requests) {
      expected.push_back(reference_output(reference_model, request));
    }

    const std::vector<Outcome>* first_outcomes = nullptr;
    std::vector<RunSummary> summaries;
    summaries.reserve(configs.size());
    for (const CacheConfig& config : configs) {
      SCOPED_TRACE("workload " + std::to_string(workload_seed) + ", " + config.name());
      const RunSummary& summary = summaries.emplace_back(run_workload(requests, config));
      ASSERT_FALSE(HasFatalFailure());
      EXPECT_GE(summary.num_steps, kNumArrivalSteps);
      if (config.num_blocks == 16) {
        // Tight enough to preempt every few steps.
        EXPECT_GE(summary.num_preemptions, summary.num_steps / 20);
      } else if (config.num_blocks == 40) {
        EXPECT_GT(summary.num_preemptions, 0);
      }
      if (config.prefix_caching) {
        EXPECT_GT(summary.prefix_cache_hits, 0);
      }

      for (size_t i = 0; i < requests.size(); ++i) {
        const Outcome& outcome = summary.outcomes[i];
        EXPECT_EQ(outcome.num_final_outputs, 1) << "request " << i;
        if (outcome.finish_reason == FinishReason::kAbort) {
          // Aborted after some steps: whatever it got is the start of its tokens.
          EXPECT_NE(requests[i].abort_step, -1);
          ASSERT_LE(outcome.tokens.size(), expected[i].tokens.size());
          const auto expected_start = std::span(expected[i].tokens).first(outcome.tokens.size());
          EXPECT_TRUE(std::ranges::equal(outcome.tokens, expected_start)) << "request " << i;
          continue;
        }
        EXPECT_EQ(outcome.tokens, expected[i].tokens) << "request " << i;
        EXPECT_EQ(outcome.finish_reason, expected[i].finish_reason) << "request " << i;
      }

      // Identical across configurations, request by request.
      if (first_outcomes == nullptr) {
        first_outcomes = &summary.outcomes;
        continue;
      }
      for (size_t i = 0; i < requests.size(); ++i) {
        const Outcome& mine = summary.outcomes[i];
        const Outcome& theirs = (*first_outcomes)[i];
        const bool aborted = mine.finish_reason == FinishReason::kAbort ||
                             theirs.finish_reason == FinishReason::kAbort;
        if (aborted) continue;
        EXPECT_EQ(mine.tokens, theirs.tokens) << "request " << i;
      }
    }
  }
}

}  // namespace
}  // namespace nanovllm
