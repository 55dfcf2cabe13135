// The sampler against an independent reference: plain loops over std::vector in double
// precision, sort-based, written from vLLM's definitions of each step.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "philox.h"
#include "sampler.h"
#include "sampler_internal.h"

namespace nanovllm {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Owns what a SamplingRow points to.
struct Request {
  explicit Request(SamplingParams sampling_params = {}) : params(sampling_params) {}

  SamplingParams params;
  std::vector<int32_t> token_ids;
  int num_prompt_tokens = 0;
  std::vector<int32_t> banned;
  uint64_t seed = 0;
  int output_index = 0;

  SamplingRow row() const {
    return {&params, seed, output_index, &token_ids, num_prompt_tokens, banned};
  }
};

SamplingParams random_params(float temperature = 1.0f, int top_k = -1, float top_p = 1.0f,
                             float min_p = 0.0f) {
  SamplingParams params;
  params.temperature = temperature;
  params.top_k = top_k;
  params.top_p = top_p;
  params.min_p = min_p;
  return params;
}

SamplingParams greedy_params() { return random_params(0.0f); }

// ---- the reference -------------------------------------------------------------------

std::vector<double> reference_penalties(const std::vector<float>& raw, const Request& request) {
  const SamplingParams& p = request.params;
  std::vector<double> logits(raw.begin(), raw.end());
  for (size_t token = 0; token < logits.size(); ++token) {
    int anywhere = 0;
    int in_output = 0;
    for (size_t i = 0; i < request.token_ids.size(); ++i) {
      if (request.token_ids[i] != static_cast<int32_t>(token)) continue;
      ++anywhere;
      if (i >= static_cast<size_t>(request.num_prompt_tokens)) ++in_output;
    }
    double& x = logits[token];
    if (anywhere > 0) x = x > 0 ? x / p.repetition_penalty : x * p.repetition_penalty;
    x -= p.frequency_penalty * in_output;
    if (in_output > 0) x -= p.presence_penalty;
  }
  for (int32_t id : request.banned) {
    if (id >= 0 && id < static_cast<int32_t>(logits.size())) logits[id] = -kInf;
  }
  return logits;
}

std::vector<double> reference_log_softmax(const std::vector<float>& raw) {
  const double max = *std::max_element(raw.begin(), raw.end());
  double sum = 0.0;
  for (float x : raw) sum += std::exp(x - max);
  std::vector<double> out;
  for (float x : raw) out.push_back(x - max - std::log(sum));
  return out;
}

// Tokens by descending value, lower id first on ties.
std::vector<int32_t> reference_order(const std::vector<double>& values) {
  std::vector<int32_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return values[a] > values[b]; });
  return order;
}

// The distribution a random row draws from: temperature, then min-p and top-k, then top-p
// over the renormalised survivors (vLLM's order), renormalised once more.
struct Distribution {
  std::vector<int32_t> kept;  // in draw order
  std::vector<double> prob;   // by token id; 0 outside `kept`
};

Distribution reference_distribution(const std::vector<double>& logits, const SamplingParams& p) {
  const double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> weight;
  for (double x : logits) weight.push_back(std::exp((x - max) / p.temperature));
  std::vector<int32_t> kept;
  for (int32_t token : reference_order(logits)) {
    if (weight[token] > 0 && weight[token] >= p.min_p) kept.push_back(token);
  }
  if (p.top_k > 0 && kept.size() > static_cast<size_t>(p.top_k)) kept.resize(p.top_k);
  double kept_mass = 0.0;
  for (int32_t token : kept) kept_mass += weight[token];
  double cumulative = 0.0;
  for (size_t n = 0; n < kept.size(); ++n) {
    cumulative += weight[kept[n]];
    if (cumulative >= p.top_p * kept_mass) {
      kept.resize(n + 1);
      break;
    }
  }
  Distribution out{kept, std::vector<double>(logits.size(), 0.0)};
  double mass = 0.0;
  for (int32_t token : kept) mass += weight[token];
  for (int32_t token : kept) out.prob[token] = weight[token] / mass;
  return out;
}

// The token the inverse CDF over the draw order gives for u, or nullopt when u falls
// within rounding distance of a boundary (float32 and double may then legitimately differ).
std::optional<int32_t> reference_pick(const Distribution& distribution, double u) {
  double cumulative = 0.0;
  for (int32_t token : distribution.kept) {
    cumulative += distribution.prob[token];
    if (std::abs(cumulative - u) < 1e-6) return std::nullopt;
    if (cumulative > u) return token;
  }
  return std::nullopt;
}

// ---- helpers -------------------------------------------------------------------------

at::Tensor to_tensor(const std::vector<std::vector<float>>& rows) {
  std::vector<float> flat;
  for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
  const int64_t n = static_cast<int64_t>(rows.size());
  return at::from_blob(flat.data(), {n, n > 0 ? static_cast<int64_t>(rows[0].size()) : 0},
                       at::kFloat)
      .clone();
}

std::vector<SamplingRow> rows_of(const std::vector<Request>& requests) {
  std::vector<SamplingRow> rows;
  for (const Request& request : requests) rows.push_back(request.row());
  return rows;
}

// A fixed, irregular row of logits: no two values equal, positive and negative.
std::vector<float> fixed_logits(int vocab_size, float scale) {
  std::vector<float> logits;
  for (int i = 0; i < vocab_size; ++i) {
    const double value = std::sin(1.7 * i + 0.3) + 0.35 * std::cos(5.1 * i);
    logits.push_back(scale * static_cast<float>(value));
  }
  return logits;
}

// Deterministic pseudo-normal values (sum of uniforms), for large rows.
std::vector<float> large_logits(int vocab_size, float scale, uint64_t seed) {
  std::vector<float> logits;
  for (int i = 0; i < vocab_size; ++i) {
    double sum = 0.0;
    for (int j = 0; j < 4; ++j) sum += detail::uniform_draw(seed, 4 * i + j);
    logits.push_back(static_cast<float>(scale * (sum - 2.0) * std::sqrt(3.0)));
  }
  return logits;
}

// One request sampled `num_seeds` times, as one batch with seeds 0..num_seeds-1.
std::vector<int32_t> sample_seeds(const std::vector<float>& logits, const SamplingParams& params,
                                  int num_seeds) {
  std::vector<Request> requests(num_seeds, Request{params});
  for (int s = 0; s < num_seeds; ++s) requests[s].seed = static_cast<uint64_t>(s);
  const at::Tensor batch = to_tensor({logits}).repeat({num_seeds, 1});
  std::vector<int32_t> tokens;
  for (const SampledToken& token : sample(batch, rows_of(requests))) {
    tokens.push_back(token.token_id);
  }
  return tokens;
}

// Each seed's token is the one the reference's inverse CDF gives for that seed's draw.
void expect_tokens_match_reference(const std::vector<float>& logits, const SamplingParams& params,
                                   int num_seeds) {
  const Distribution distribution =
      reference_distribution(std::vector<double>(logits.begin(), logits.end()), params);
  const std::vector<int32_t> tokens = sample_seeds(logits, params, num_seeds);
  int compared = 0;
  for (int s = 0; s < num_seeds; ++s) {
    const std::optional<int32_t> expected =
        reference_pick(distribution, detail::uniform_draw(static_cast<uint64_t>(s), 0));
    if (!expected) continue;
    ++compared;
    ASSERT_EQ(tokens[s], *expected) << "seed " << s;
  }
  EXPECT_GT(compared, num_seeds / 2);
}

// Sampled tokens all lie in the reference's kept set, every kept token of noticeable
// probability shows up, and the frequencies pass a chi-square test against the reference.
void expect_distribution_matches_reference(const std::vector<float>& logits,
                                           const SamplingParams& params, int num_seeds) {
  const Distribution distribution =
      reference_distribution(std::vector<double>(logits.begin(), logits.end()), params);
  std::map<int32_t, int> counts;
  for (int32_t token : sample_seeds(logits, params, num_seeds)) ++counts[token];
  for (const auto& [token, count] : counts) {
    ASSERT_GT(distribution.prob.at(token), 0.0) << "token " << token << " is outside the kept set";
  }
  // Tokens expected fewer than 5 times are pooled into one cell, as chi-square requires.
  double chi_square = 0.0;
  int cells = 0;
  double pooled_expected = 0.0;
  int pooled_count = 0;
  for (int32_t token : distribution.kept) {
    const double expected = distribution.prob[token] * num_seeds;
    if (expected >= 20.0) {
      EXPECT_GT(counts[token], 0) << "kept token " << token << " never drawn";
    }
    if (expected < 5.0) {
      pooled_expected += expected;
      pooled_count += counts[token];
      continue;
    }
    chi_square += std::pow(counts[token] - expected, 2) / expected;
    ++cells;
  }
  if (pooled_expected > 0.0) {
    chi_square += std::pow(pooled_count - pooled_expected, 2) / std::max(pooled_expected, 5.0);
    ++cells;
  }
  // Degrees of freedom plus ~7 standard deviations: a fixed-seed check that only a wrong
  // distribution fails.
  const double dof = static_cast<double>(cells) - 1.0;
  EXPECT_LT(chi_square, dof + 7.0 * std::sqrt(2.0 * std::max(dof, 1.0)) + 10.0);
}

// ---- the random generator ------------------------------------------------------------

TEST(Philox, MatchesTheRandom123KnownAnswers) {
  using detail::philox4x32_10;
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}),
            (detail::PhiloxCounter{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
                          {0xffffffff, 0xffffffff}),
            (detail::PhiloxCounter{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
                          {0xa4093822, 0x299f31d0}),
            (detail::PhiloxCounter{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(Philox, UniformDrawsAreInRangeAndDependOnSeedAndIndex) {
  std::set<double> draws;
  for (uint64_t seed : {0ull, 1ull, 1ull << 40}) {
    for (int index = 0; index < 100; ++index) {
      const double u = detail::uniform_draw(seed, index);
      EXPECT_GE(u, 0.0);
      EXPECT_LT(u, 1.0);
      draws.insert(u);
    }
  }
  EXPECT_EQ(draws.size(), 300u);
}

// ---- the exponential behind every weight and logprob ----------------------------------

TEST(ExpNonpositive, IsWithinTwoUlpOfExpAndZeroWhereItShouldBe) {
  double worst = 0.0;
  for (int i = 0; i <= 8000000; ++i) {
    const float x = -80.0f * static_cast<float>(i) / 8000000.0f;
    const double exact = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(detail::exp_nonpositive(x) - exact) / exact);
  }
  EXPECT_LT(worst, 2.0 * 0x1.0p-24);
  EXPECT_EQ(detail::exp_nonpositive(0.0f), 1.0f);
  EXPECT_EQ(detail::exp_nonpositive(-80.5f), 0.0f);
  EXPECT_EQ(detail::exp_nonpositive(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(detail::exp_nonpositive(std::numeric_limits<float>::quiet_NaN()), 0.0f);
}

// ---- penalties and bans --------------------------------------------------------------

TEST(SamplerPenalties, MatchTheReferenceAndTouchOnlyOccurringTokens) {
  const std::vector<float> raw = fixed_logits(24, 2.5f);
  Request request;
  // Prompt: 2, 5, 5, 9 (and 1000, outside the vocabulary); output: 5, 7, 7, 7, 11.
  request.token_ids = {2, 5, 5, 9, 1000, 5, 7, 7, 7, 11};
  request.num_prompt_tokens = 5;
  request.banned = {3, 7, -4, 5000};

  for (float repetition : {1.0f, 1.3f, 0.7f}) {
    for (float frequency : {0.0f, 0.4f, -1.1f}) {
      for (float presence : {0.0f, 0.9f, -0.5f}) {
        request.params.repetition_penalty = repetition;
        request.params.frequency_penalty = frequency;
        request.params.presence_penalty = presence;
        std::vector<float> processed = raw;
        detail::process_logits_row(processed.data(), static_cast<int64_t>(processed.size()),
                                   request.row());
        const std::vector<double> expected = reference_penalties(raw, request);
        for (size_t token = 0; token < raw.size(); ++token) {
          if (std::isinf(expected[token])) {
            EXPECT_EQ(processed[token], -std::numeric_limits<float>::infinity()) << token;
          } else {
            EXPECT_NEAR(processed[token], expected[token], 1e-5) << "token " << token;
          }
        }
        for (int32_t untouched : {0, 1, 4, 6, 8, 10, 12, 23}) {
          EXPECT_EQ(processed[untouched], raw[untouched]);
        }
      }
    }
  }
}

TEST(SamplerPenalties, RepetitionPenaltyCanChangeTheGreedyChoice) {
  Request request{greedy_params()};
  request.params.repetition_penalty = 2.0f;
  request.token_ids = {0, 4};
  request.num_prompt_tokens = 2;
  // Token 0 (2.0 -> 1.0) falls below token 1 (1.5); token 4 (-0.5 -> -1.0) stays low.
  const at::Tensor logits = to_tensor({{2.0f, 1.5f, 0.0f, 0.2f, -0.5f}});
  EXPECT_EQ(sample(logits, rows_of({request}))[0].token_id, 1);
}

// ---- greedy --------------------------------------------------------------------------

TEST(SamplerGreedy, TakesTheArgmaxWithTheLowestIdOnTies) {
  const std::vector<float> logits = {1.0f, 5.0f, 2.0f, 5.0f, 0.0f, 5.0f};
  Request plain{greedy_params()};
  Request with_logprobs{greedy_params()};
  with_logprobs.params.logprobs = 0;
  Request with_ban{greedy_params()};
  with_ban.banned = {1};
  const auto out = sample(to_tensor({logits, logits, logits}),
                          rows_of({plain, with_logprobs, with_ban}));
  EXPECT_EQ(out[0].token_id, 1);
  EXPECT_EQ(out[1].token_id, 1);
  EXPECT_EQ(out[2].token_id, 3);
}

TEST(SamplerGreedy, TieRuleHoldsOnAFullSizeVocabularyInEveryDtype) {
  constexpr int kVocab = 151936;
  std::vector<float> logits(kVocab, 0.0f);
  logits[150000] = 7.0f;
  logits[100000] = 7.0f;
  logits[120000] = 6.0f;
  Request plain{greedy_params()};
  Request with_logprobs{greedy_params()};
  with_logprobs.params.logprobs = 2;
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const at::Tensor batch = to_tensor({logits, logits}).to(dtype);
    const auto out = sample(batch, rows_of({plain, with_logprobs}));
    EXPECT_EQ(out[0].token_id, 100000) << dtype;
    EXPECT_EQ(out[1].token_id, 100000) << dtype;
  }
}

TEST(SamplerGreedy, NeverReturnsABannedToken) {
  Request request{greedy_params()};
  request.banned = {2, 0};
  const auto out = sample(to_tensor({{9.0f, 1.0f, 9.5f, 3.0f}}), rows_of({request}));
  EXPECT_EQ(out[0].token_id, 3);
}

// ---- random sampling against the reference -------------------------------------------

struct FilterCase {
  const char* name;
  SamplingParams params;
};

std::vector<FilterCase> filter_cases() {
  return {
      {"plain", random_params()},
      {"hot", random_params(1.8f)},
      {"cold", random_params(0.35f)},
      {"top_k", random_params(0.7f, 5)},
      {"top_p", random_params(1.0f, -1, 0.8f)},
      {"min_p", random_params(1.0f, -1, 1.0f, 0.1f)},
      {"all", random_params(1.3f, 10, 0.9f, 0.05f)},
      {"top_k_and_top_p", random_params(1.0f, 8, 0.6f)},
  };
}

TEST(SamplerRandom, EachSeedDrawsTheReferenceInverseCdfToken) {
  const std::vector<float> logits = fixed_logits(40, 2.0f);
  for (const FilterCase& filter : filter_cases()) {
    SCOPED_TRACE(filter.name);
    expect_tokens_match_reference(logits, filter.params, 2000);
  }
}

TEST(SamplerRandom, FrequenciesMatchTheReferenceDistribution) {
  const std::vector<float> logits = fixed_logits(40, 2.0f);
  for (const FilterCase& filter : filter_cases()) {
    SCOPED_TRACE(filter.name);
    expect_distribution_matches_reference(logits, filter.params, 20000);
  }
}

TEST(SamplerRandom, TopKKeepsTheLowestIdsOfATieAtItsBoundary) {
  // Value 3 at ids 1, 3, 5 and 7; top_k = 2 keeps ids 1 and 3, each about half the time.
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, 0.0f, 3.0f, -1.0f, 3.0f, 0.5f, 2.5f};
  std::map<int32_t, int> counts;
  for (int32_t token : sample_seeds(logits, random_params(1.0f, 2), 4000)) ++counts[token];
  ASSERT_EQ(counts.size(), 2u);
  EXPECT_NEAR(counts[1], 2000, 200);
  EXPECT_NEAR(counts[3], 2000, 200);
}

TEST(SamplerRandom, TopPAlwaysKeepsTheBestToken) {
  const std::vector<float> logits = {0.0f, 4.0f, 3.9f, -2.0f};
  for (int32_t token : sample_seeds(logits, random_params(1.0f, -1, 0.01f), 500)) {
    EXPECT_EQ(token, 1);
  }
}

TEST(SamplerRandom, BannedTokensAreNeverDrawn) {
  const std::vector<float> logits = fixed_logits(40, 2.0f);
  const std::vector<double> as_double(logits.begin(), logits.end());
  const std::vector<int32_t> order = reference_order(as_double);
  // Ban the three most likely tokens; sample hot so that every other token is likely.
  Request request{random_params(2.0f)};
  request.banned = {order[0], order[1], order[2]};
  std::vector<Request> requests(3000, request);
  for (int s = 0; s < 3000; ++s) requests[s].seed = static_cast<uint64_t>(s);
  std::set<int32_t> seen;
  const at::Tensor batch = to_tensor({logits}).repeat({3000, 1});
  for (const SampledToken& token : sample(batch, rows_of(requests))) seen.insert(token.token_id);
  for (int32_t banned : request.banned) EXPECT_EQ(seen.count(banned), 0u);
  EXPECT_EQ(seen.size(), 37u);
}

TEST(SamplerRandom, PenalisedLogitsAreWhatIsSampledFrom) {
  const std::vector<float> raw = fixed_logits(30, 1.5f);
  Request request{random_params(0.9f, 12, 0.95f)};
  request.params.repetition_penalty = 1.4f;
  request.params.frequency_penalty = 0.6f;
  request.params.presence_penalty = 0.3f;
  request.token_ids = {1, 4, 4, 8, 4, 13, 13, 20};
  request.num_prompt_tokens = 3;
  request.banned = {reference_order(std::vector<double>(raw.begin(), raw.end()))[0]};
  const Distribution distribution =
      reference_distribution(reference_penalties(raw, request), request.params);
  std::vector<Request> requests(2000, request);
  for (int s = 0; s < 2000; ++s) requests[s].seed = static_cast<uint64_t>(s);
  const auto out = sample(to_tensor({raw}).repeat({2000, 1}), rows_of(requests));
  for (int s = 0; s < 2000; ++s) {
    const std::optional<int32_t> expected =
        reference_pick(distribution, detail::uniform_draw(static_cast<uint64_t>(s), 0));
    if (expected) {
      ASSERT_EQ(out[s].token_id, *expected) << "seed " << s;
    }
  }
}

// Full-size rows: the candidate search widens its floor only when needed, and the answer
// must not depend on how far it went.
TEST(SamplerRandom, FullVocabularyRowsMatchTheReference) {
  constexpr int kVocab = 151936;
  for (float scale : {0.5f, 4.0f}) {
    const std::vector<float> logits = large_logits(kVocab, scale, 17);
    for (const SamplingParams& params :
         {random_params(), random_params(1.0f, -1, 0.9f), random_params(0.8f, 1000, 0.95f),
          random_params(1.0f, 50000, 0.5f), random_params(1.0f, -1, 1.0f, 0.001f)}) {
      SCOPED_TRACE(testing::Message() << "scale " << scale << " top_k " << params.top_k
                                      << " top_p " << params.top_p << " min_p " << params.min_p);
      expect_tokens_match_reference(logits, params, 60);
    }
  }
}

TEST(SamplerRandom, ProbabilityMassFarBelowTheBestTokenIsReached) {
  // One token at 0 and a long tail at -10: the tail holds ~0.9 of the probability (~0.2
  // under top_k = 5000), but lies below the first candidate floor.
  std::vector<float> logits(20000, -10.0f);
  logits[0] = 0.0f;
  for (const SamplingParams& params :
       {random_params(), random_params(1.0f, 5000), random_params(1.0f, -1, 0.7f)}) {
    SCOPED_TRACE(testing::Message() << "top_k " << params.top_k << " top_p " << params.top_p);
    expect_tokens_match_reference(logits, params, 400);
    const std::vector<int32_t> tokens = sample_seeds(logits, params, 400);
    EXPECT_GT(std::count(tokens.begin(), tokens.end(), 0), 100);
    EXPECT_GT(std::count_if(tokens.begin(), tokens.end(), [](int32_t t) { return t > 0; }), 40);
    if (params.top_k > 0) {
      EXPECT_TRUE(std::all_of(tokens.begin(), tokens.end(), [](int32_t t) { return t < 5000; }));
    }
  }
}

TEST(SamplerRandom, ANearZeroTemperatureDrawsTheArgmax) {
  const std::vector<float> logits = fixed_logits(40, 2.0f);
  const int32_t best = reference_order(std::vector<double>(logits.begin(), logits.end()))[0];
  for (int32_t token : sample_seeds(logits, random_params(1e-30f), 200)) EXPECT_EQ(token, best);
}

TEST(SamplerRandom, LeavesTheCallersLogitsUntouched) {
  const at::Tensor logits = to_tensor({fixed_logits(40, 2.0f), fixed_logits(40, 1.0f)});
  const at::Tensor before = logits.clone();
  Request penalised{random_params(0.7f, 5)};
  penalised.params.repetition_penalty = 1.5f;
  penalised.params.logprobs = 3;
  penalised.token_ids = {1, 2, 3};
  penalised.banned = {4};
  Request greedy{greedy_params()};
  greedy.banned = {0};
  sample(logits, rows_of({penalised, greedy}));
  EXPECT_TRUE(at::equal(logits, before));
}

// ---- logprobs ------------------------------------------------------------------------

TEST(SamplerLogprobs, AreTheRawLogSoftmaxWithTopNInOrder) {
  std::vector<float> raw = fixed_logits(50, 3.0f);
  raw[17] = raw[31] = raw[44] = 9.0f;  // a three-way tie at the top
  const std::vector<double> expected = reference_log_softmax(raw);
  const std::vector<int32_t> order = reference_order(expected);

  Request top5{random_params(0.6f, 20, 0.9f)};
  top5.params.logprobs = 5;
  top5.params.repetition_penalty = 1.5f;
  top5.token_ids = {17, 3};
  top5.num_prompt_tokens = 1;
  top5.banned = {44};
  Request sampled_only{greedy_params()};
  sampled_only.params.logprobs = 0;
  Request none{random_params()};
  Request greedy_top3{greedy_params()};
  greedy_top3.params.logprobs = 3;

  const auto out = sample(to_tensor({raw, raw, raw, raw}),
                          rows_of({top5, sampled_only, none, greedy_top3}));
  // Penalties, bans and temperature change what is drawn, not the reported logprobs.
  EXPECT_NEAR(out[0].logprob, expected[out[0].token_id], 1e-5);
  ASSERT_EQ(out[0].top_logprobs.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(out[0].top_logprobs[i].token_id, order[i]);
    EXPECT_NEAR(out[0].top_logprobs[i].logprob, expected[order[i]], 1e-5);
  }
  EXPECT_EQ(out[0].top_logprobs[0].token_id, 17);
  EXPECT_EQ(out[0].top_logprobs[1].token_id, 31);
  EXPECT_EQ(out[0].top_logprobs[2].token_id, 44);

  EXPECT_EQ(out[1].token_id, 17);
  EXPECT_NEAR(out[1].logprob, expected[17], 1e-5);
  EXPECT_TRUE(out[1].top_logprobs.empty());

  EXPECT_EQ(out[2].logprob, 0.0f);
  EXPECT_TRUE(out[2].top_logprobs.empty());

  ASSERT_EQ(out[3].top_logprobs.size(), 3u);
  EXPECT_EQ(out[3].top_logprobs[2].token_id, 44);
}

// ---- reproducibility -----------------------------------------------------------------

void expect_same(const SampledToken& a, const SampledToken& b) {
  EXPECT_EQ(a.token_id, b.token_id);
  EXPECT_EQ(a.logprob, b.logprob);
  ASSERT_EQ(a.top_logprobs.size(), b.top_logprobs.size());
  for (size_t i = 0; i < a.top_logprobs.size(); ++i) {
    EXPECT_EQ(a.top_logprobs[i].token_id, b.top_logprobs[i].token_id);
    EXPECT_EQ(a.top_logprobs[i].logprob, b.top_logprobs[i].logprob);
  }
}

TEST(SamplerReproducibility, ARowSamplesTheSameAloneAndInAnyBatch) {
  constexpr int kVocab = 4096;
  // Requests of every kind, each with its own logits.
  std::vector<Request> requests;
  std::vector<std::vector<float>> logits;
  for (int i = 0; i < 12; ++i) {
    Request request{i % 4 == 0 ? greedy_params() : random_params(0.5f + 0.2f * i, 3 * i, 0.97f)};
    request.params.logprobs = i % 3 == 0 ? 2 : -1;
    request.params.frequency_penalty = i % 5 == 0 ? 0.5f : 0.0f;
    request.token_ids = {1, 2, 3, i};
    request.num_prompt_tokens = 2;
    request.seed = 1000 + static_cast<uint64_t>(i);
    request.output_index = i;
    requests.push_back(request);
    logits.push_back(large_logits(kVocab, 1.0f + 0.3f * static_cast<float>(i), i));
  }
  std::vector<SampledToken> alone;
  for (size_t i = 0; i < requests.size(); ++i) {
    alone.push_back(sample(to_tensor({logits[i]}), rows_of({requests[i]}))[0]);
  }
  const int default_threads = at::get_num_threads();
  for (int threads : {1, default_threads}) {
    at::set_num_threads(threads);
    for (uint64_t shuffle : {1ull, 2ull, 3ull}) {
      // A batch of all requests, some twice, in a shuffled order.
      std::vector<size_t> picks;
      for (size_t i = 0; i < 3 * requests.size(); ++i) {
        picks.push_back(static_cast<size_t>(detail::uniform_draw(shuffle, static_cast<int>(i)) *
                                            static_cast<double>(requests.size())));
      }
      std::vector<Request> batch;
      std::vector<std::vector<float>> batch_logits;
      for (size_t pick : picks) {
        batch.push_back(requests[pick]);
        batch_logits.push_back(logits[pick]);
      }
      const auto out = sample(to_tensor(batch_logits), rows_of(batch));
      for (size_t j = 0; j < picks.size(); ++j) {
        SCOPED_TRACE(testing::Message() << "threads " << threads << " request " << picks[j]);
        expect_same(out[j], alone[picks[j]]);
      }
    }
  }
  at::set_num_threads(default_threads);
}

TEST(SamplerReproducibility, TheDrawDependsOnSeedAndOutputIndex) {
  const std::vector<float> logits(64, 0.0f);  // uniform: every draw is visible in the token
  Request request{random_params()};
  request.seed = 42;
  std::set<int32_t> by_index;
  for (int index = 0; index < 40; ++index) {
    request.output_index = index;
    const int32_t first = sample(to_tensor({logits}), rows_of({request}))[0].token_id;
    const int32_t again = sample(to_tensor({logits}), rows_of({request}))[0].token_id;
    EXPECT_EQ(first, again);
    by_index.insert(first);
  }
  EXPECT_GT(by_index.size(), 20u);
  const std::vector<int32_t> by_seed = sample_seeds(logits, request.params, 40);
  EXPECT_GT(std::set<int32_t>(by_seed.begin(), by_seed.end()).size(), 20u);
}

// ---- dtypes and errors ---------------------------------------------------------------

TEST(SamplerDtypes, HalfAndBFloat16LogitsSampleAsTheirFloat32Values) {
  std::vector<Request> requests = {Request{greedy_params()}, Request{greedy_params()},
                                   Request{random_params(0.8f, 7, 0.9f)},
                                   Request{random_params(1.0f, -1, 1.0f, 0.02f)},
                                   Request{random_params()}};
  requests[1].params.logprobs = 4;
  requests[2].params.logprobs = 3;
  requests[4].params.presence_penalty = 1.0f;
  requests[4].token_ids = {5, 6};
  for (size_t i = 0; i < requests.size(); ++i) requests[i].seed = 7 * i + 1;
  std::vector<std::vector<float>> logits;
  for (size_t i = 0; i < requests.size(); ++i) logits.push_back(fixed_logits(300, 2.0f + i));
  const at::Tensor base = to_tensor(logits);
  for (at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    const at::Tensor reduced = base.to(dtype);
    const auto from_reduced = sample(reduced, rows_of(requests));
    const auto from_float = sample(reduced.to(at::kFloat), rows_of(requests));
    for (size_t i = 0; i < requests.size(); ++i) expect_same(from_reduced[i], from_float[i]);
    // And the logprobs are those of the reduced-precision values, within float32 rounding.
    const at::Tensor widened = reduced[1].to(at::kFloat).contiguous();
    const std::vector<float> row1(widened.data_ptr<float>(), widened.data_ptr<float>() + 300);
    EXPECT_NEAR(from_reduced[1].logprob, reference_log_softmax(row1)[from_reduced[1].token_id],
                1e-5);
  }
}

TEST(SamplerErrors, RowCountMustMatchTheLogits) {
  const Request request{greedy_params()};
  const at::Tensor logits = at::zeros({3, 10});
  try {
    sample(logits, rows_of({request, request}));
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("[3, 10] for 2 SamplingRows"), std::string::npos)
        << error.what();
  }
  EXPECT_THROW(sample(at::zeros({10}), rows_of({request})), std::invalid_argument);
  EXPECT_THROW(sample(at::zeros({1, 10}, at::kLong), rows_of({request})), std::invalid_argument);
}

TEST(SamplerErrors, ARowWithNothingLeftToChooseIsReported) {
  Request request{random_params()};
  request.banned = {0, 1, 2};
  EXPECT_THROW(sample(at::zeros({1, 3}), rows_of({request})), std::runtime_error);
  request.params = greedy_params();
  EXPECT_THROW(sample(at::zeros({1, 3}), rows_of({request})), std::runtime_error);
}

TEST(Sampler, AnEmptyBatchGivesNoTokens) {
  EXPECT_TRUE(sample(at::zeros({0, 10}), {}).empty());
}

}  // namespace
}  // namespace nanovllm
