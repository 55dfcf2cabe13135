// EngineLoop under concurrency: many submitting threads, aborts mid-stream, shutdown while
// busy, admission control, a failing model. The engine's deterministic fake runner stands
// in for the model, so every request's expected tokens are known.
#include "nanovllm/engine_loop.h"

#include "testing/fake_model_runner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace nanovllm {
namespace {

using namespace std::chrono_literals;
using testing::FakeModelRunner;
using testing::FakeModelRunnerOptions;

FakeModelRunnerOptions fake_options(int num_blocks, int block_size) {
  FakeModelRunnerOptions options;
  options.num_blocks = num_blocks;
  options.block_size = block_size;
  return options;
}

SamplingParams greedy(int max_tokens, uint64_t seed = 0) {
  SamplingParams params;
  params.temperature = 0.0f;
  params.max_tokens = max_tokens;
  params.seed = seed;
  return params;
}

// What the fake model generates for a request, computed without the engine.
std::vector<int32_t> expected_output(const std::vector<int32_t>& prompt,
                                     const SamplingParams& params) {
  const FakeModelRunner reference(fake_options(1, 1));
  std::vector<int32_t> tokens = prompt;
  for (int i = 0; i < params.max_tokens; ++i) {
    tokens.push_back(reference.next_token(tokens, static_cast<int>(prompt.size()), params,
                                          *params.seed));
  }
  return {tokens.begin() + static_cast<std::ptrdiff_t>(prompt.size()), tokens.end()};
}

// The loop over an engine over the fake model; `fail` makes the model throw, as a broken
// model would. A token_delay makes each sampled token take that long, like a real model.
struct Fixture {
  std::shared_ptr<std::atomic<bool>> fail = std::make_shared<std::atomic<bool>>(false);
  std::unique_ptr<EngineLoop> loop;
};

Fixture make_loop(int max_pending = 1024, int num_blocks = 256, int max_num_seqs = 16,
                  std::chrono::microseconds token_delay = 0us) {
  EngineConfig config;
  config.max_num_seqs = max_num_seqs;
  config.max_num_batched_tokens = 256;
  config.max_model_len = 1024;
  config.kvcache_block_size = 4;
  Fixture f;
  const FakeModelRunner reference(fake_options(1, 1));
  auto token_fn = [fail = f.fail, reference, token_delay](const Sequence& seq) {
    if (fail->load()) throw std::runtime_error("fake model failure");
    std::this_thread::sleep_for(token_delay);
    return reference.next_token(seq.token_ids(), seq.num_prompt_tokens(), seq.params(),
                                seq.seed());
  };
  auto runner = std::make_unique<FakeModelRunner>(
      fake_options(num_blocks, config.kvcache_block_size), token_fn);
  auto engine = std::make_unique<LLMEngine>(config, std::move(runner));
  f.loop = std::make_unique<EngineLoop>(std::move(engine), max_pending);
  return f;
}

std::vector<int32_t> prompt_for(int i) {
  std::vector<int32_t> prompt;
  for (int j = 0; j < 3 + i % 11; ++j) prompt.push_back((i * 37 + j * 11) % 1000);
  return prompt;
}

// Reads a request's stream to its end, checking that exactly one output is final and that
// it comes last.
struct Collected {
  std::vector<int32_t> tokens;
  FinishReason reason = FinishReason::kNone;
};
Collected collect(EngineLoop& loop, int64_t id) {
  Collected c;
  for (;;) {
    for (RequestOutput& out : loop.get(id, 10s)) {
      EXPECT_EQ(out.request_id, id);
      EXPECT_EQ(c.reason, FinishReason::kNone) << "output after the final one";
      c.tokens.insert(c.tokens.end(), out.new_token_ids.begin(), out.new_token_ids.end());
      if (out.finished) c.reason = out.finish_reason;
    }
    if (c.reason != FinishReason::kNone) return c;
  }
}

void expect_idle_and_free(const EngineLoop& loop) {
  EngineStats stats = loop.stats();
  EXPECT_EQ(stats.num_running, 0);
  EXPECT_EQ(stats.num_waiting, 0);
  EXPECT_EQ(stats.num_free_blocks, stats.num_kvcache_blocks);
}

TEST(EngineLoop, StreamsOneRequestToItsEnd) {
  Fixture f = make_loop();
  const int64_t id = f.loop->submit(prompt_for(1), greedy(9));
  Collected c = collect(*f.loop, id);
  EXPECT_EQ(c.tokens, expected_output(prompt_for(1), greedy(9)));
  EXPECT_EQ(c.reason, FinishReason::kLength);
  EXPECT_THROW(f.loop->get(id, 0s), std::out_of_range) << "a finished request is forgotten";
  expect_idle_and_free(*f.loop);
}

TEST(EngineLoop, InvalidRequestsAreRejectedSynchronously) {
  Fixture f = make_loop();
  EXPECT_THROW(f.loop->submit({}, greedy(4)), std::invalid_argument);
  SamplingParams bad = greedy(4);
  bad.temperature = -1.0f;
  EXPECT_THROW(f.loop->submit(prompt_for(0), bad), std::invalid_argument);
  EXPECT_THROW(f.loop->submit(std::vector<int32_t>(1020, 5), greedy(10)), std::invalid_argument);
  // The loop still serves valid requests afterwards.
  const int64_t id = f.loop->submit(prompt_for(2), greedy(3));
  EXPECT_EQ(collect(*f.loop, id).tokens, expected_output(prompt_for(2), greedy(3)));
}

TEST(EngineLoop, ConcurrentSubmittersEachGetTheirOwnCompleteOutput) {
  Fixture f = make_loop();
  constexpr int kThreads = 8;
  constexpr int kPerThread = 12;
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const int k = t * kPerThread + i;
        const SamplingParams params = greedy(1 + k % 13, k);
        Collected c = collect(*f.loop, f.loop->submit(prompt_for(k), params));
        if (c.tokens != expected_output(prompt_for(k), params) ||
            c.reason != FinishReason::kLength) {
          ++mismatches;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
  expect_idle_and_free(*f.loop);
}

TEST(EngineLoop, OnePollingConsumerServesEveryStreamExactlyOnce) {
  Fixture f = make_loop();
  constexpr int kRequests = 60;
  std::mutex mutex;
  std::map<int64_t, int> index_of;  // id -> k, filled by the submitters
  std::map<int64_t, Collected> seen;
  std::atomic<int> finished{0};
  std::atomic<int> duplicate_finals{0};

  std::thread consumer([&] {
    while (finished.load() < kRequests) {
      for (RequestOutput& out : f.loop->poll(100ms)) {
        Collected& c = seen[out.request_id];
        if (c.reason != FinishReason::kNone) ++duplicate_finals;
        c.tokens.insert(c.tokens.end(), out.new_token_ids.begin(), out.new_token_ids.end());
        if (out.finished) {
          c.reason = out.finish_reason;
          ++finished;
        }
      }
    }
  });
  std::vector<std::thread> submitters;
  for (int t = 0; t < 4; ++t) {
    submitters.emplace_back([&, t] {
      for (int k = t; k < kRequests; k += 4) {
        const int64_t id = f.loop->submit(prompt_for(k), greedy(1 + k % 7, k));
        std::lock_guard lock(mutex);
        index_of[id] = k;
      }
    });
  }
  for (std::thread& t : submitters) t.join();
  consumer.join();

  EXPECT_EQ(duplicate_finals.load(), 0);
  ASSERT_EQ(seen.size(), static_cast<size_t>(kRequests));
  for (const auto& [id, c] : seen) {
    const int k = index_of.at(id);
    EXPECT_EQ(c.tokens, expected_output(prompt_for(k), greedy(1 + k % 7, k))) << "request " << k;
  }
  expect_idle_and_free(*f.loop);
  EXPECT_TRUE(f.loop->poll(0s).empty());
}

TEST(EngineLoop, AbortsMidStreamEndTheRequestAndFreeItsBlocks) {
  // 16 sequences of up to 213 tokens want more blocks than the cache has, so aborts also
  // meet preempted and waiting requests. The model is slowed down so that aborts sent
  // after a few tokens land mid-stream.
  Fixture f = make_loop(/*max_pending=*/1024, /*num_blocks=*/256, /*max_num_seqs=*/16,
                        /*token_delay=*/50us);
  constexpr int kRequests = 24;
  std::vector<std::thread> threads;
  std::atomic<int> aborted{0};
  std::atomic<int> wrong{0};
  for (int k = 0; k < kRequests; ++k) {
    threads.emplace_back([&, k] {
      const SamplingParams params = greedy(200, k);
      const std::vector<int32_t> want = expected_output(prompt_for(k), params);
      const int64_t id = f.loop->submit(prompt_for(k), params);
      const bool abandon = k % 2 == 0;
      Collected c;
      bool abort_sent = false;
      while (c.reason == FinishReason::kNone) {
        for (RequestOutput& out : f.loop->get(id, 10s)) {
          c.tokens.insert(c.tokens.end(), out.new_token_ids.begin(), out.new_token_ids.end());
          if (out.finished) c.reason = out.finish_reason;
        }
        if (abandon && !abort_sent && c.tokens.size() >= static_cast<size_t>(1 + k % 5)) {
          f.loop->abort(id);
          abort_sent = true;
        }
      }
      // An aborted request streamed a prefix of its output; one the abort reached too late
      // (or never aborted) streamed all of it.
      const bool prefix = c.tokens.size() < want.size() &&
                          std::equal(c.tokens.begin(), c.tokens.end(), want.begin());
      if (c.reason == FinishReason::kAbort && abandon && prefix) {
        ++aborted;
      } else if (c.reason != FinishReason::kLength || c.tokens != want) {
        ++wrong;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GT(aborted.load(), 0);
  expect_idle_and_free(*f.loop);
}

TEST(EngineLoop, AbortOfUnknownOrFinishedRequestIsIgnored) {
  Fixture f = make_loop();
  const int64_t id = f.loop->submit(prompt_for(3), greedy(2));
  collect(*f.loop, id);
  f.loop->abort(id);
  f.loop->abort(123456);
  const int64_t next = f.loop->submit(prompt_for(4), greedy(2));
  EXPECT_EQ(collect(*f.loop, next).reason, FinishReason::kLength);
}

TEST(EngineLoop, SleepsWhenIdle) {
  Fixture f = make_loop();
  collect(*f.loop, f.loop->submit(prompt_for(5), greedy(4)));
  const int64_t steps = f.loop->stats().num_steps;
  // Nothing to do: waiting on the (empty) outbox for a while must not see the loop step.
  EXPECT_TRUE(f.loop->poll(100ms).empty());
  EXPECT_EQ(f.loop->stats().num_steps, steps);
}

TEST(EngineLoop, RefusesSubmissionsBeyondMaxPending) {
  // One sequence runs at a time (for about a second), so later requests wait; at most two
  // may wait.
  Fixture f = make_loop(/*max_pending=*/2, /*num_blocks=*/256, /*max_num_seqs=*/1,
                        /*token_delay=*/1ms);
  const int64_t running = f.loop->submit(prompt_for(0), greedy(1000 - 20));
  f.loop->get(running, 10s);  // it has been scheduled
  const int64_t waiting1 = f.loop->submit(prompt_for(1), greedy(4));
  const int64_t waiting2 = f.loop->submit(prompt_for(2), greedy(4));
  EXPECT_THROW(f.loop->submit(prompt_for(3), greedy(4)), QueueFullError);

  f.loop->abort(running);
  EXPECT_EQ(collect(*f.loop, running).reason, FinishReason::kAbort);
  EXPECT_EQ(collect(*f.loop, waiting1).reason, FinishReason::kLength);
  EXPECT_EQ(collect(*f.loop, waiting2).reason, FinishReason::kLength);
  EXPECT_EQ(collect(*f.loop, f.loop->submit(prompt_for(3), greedy(4))).reason,
            FinishReason::kLength);
}

TEST(EngineLoop, StopWhileBusyFinishesEveryRequestWithAbort) {
  Fixture f = make_loop(/*max_pending=*/1024, /*num_blocks=*/8192, /*max_num_seqs=*/16,
                        /*token_delay=*/20us);
  std::vector<int64_t> ids;
  for (int k = 0; k < 20; ++k) ids.push_back(f.loop->submit(prompt_for(k), greedy(900, k)));
  // Each request needs 900 steps and stop() comes about 20 steps in.
  f.loop->stop();

  int num_aborted = 0;
  for (int k = 0; k < 20; ++k) {
    Collected c = collect(*f.loop, ids[k]);
    if (c.reason == FinishReason::kAbort) {
      ++num_aborted;
    } else {
      EXPECT_EQ(c.tokens, expected_output(prompt_for(k), greedy(900, k)));
    }
  }
  EXPECT_GT(num_aborted, 0);
  EXPECT_THROW(f.loop->submit(prompt_for(0), greedy(1)), EngineStoppedError);
  f.loop->stop();  // idempotent
  expect_idle_and_free(*f.loop);
}

TEST(EngineLoop, AFailingModelEndsEveryRequestAndSaysWhy) {
  Fixture f = make_loop(/*max_pending=*/1024, /*num_blocks=*/256, /*max_num_seqs=*/16,
                        /*token_delay=*/1ms);
  const int64_t id = f.loop->submit(prompt_for(0), greedy(500));
  f.loop->get(id, 10s);
  *f.fail = true;
  EXPECT_EQ(collect(*f.loop, id).reason, FinishReason::kAbort);
  EXPECT_NE(f.loop->error().find("fake model failure"), std::string::npos);
  try {
    f.loop->submit(prompt_for(1), greedy(1));
    ADD_FAILURE() << "submit after a failure must throw";
  } catch (const EngineStoppedError& e) {
    EXPECT_NE(std::string(e.what()).find("fake model failure"), std::string::npos);
  }
}

}  // namespace
}  // namespace nanovllm
