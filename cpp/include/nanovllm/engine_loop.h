// A thread-safe front end to LLMEngine for servers: the step loop runs on its own thread,
// any number of client threads submit, abort and read per-request output streams.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "nanovllm/llm_engine.h"

namespace nanovllm {

// submit() refused a request because max_pending requests already wait to be scheduled.
// Nothing was queued; retrying later may succeed (an HTTP server answers 503).
class QueueFullError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// submit() after stop(), or after the step loop failed (the message says why).
class EngineStoppedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class EngineLoop {
 public:
  using Clock = std::chrono::steady_clock;

  static constexpr int kDefaultMaxPending = 1024;

  // Takes the engine and starts the step loop. At most max_pending submitted requests may
  // wait for their first schedule at any time (>= 1).
  explicit EngineLoop(std::unique_ptr<LLMEngine> engine, int max_pending = kDefaultMaxPending);
  // stop()s.
  ~EngineLoop();
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;

  // Queues a request and returns its id once the engine has accepted it (at most one step
  // later: the engine is only ever touched by the loop thread). Throws what
  // LLMEngine::add_request throws for invalid requests (std::invalid_argument),
  // QueueFullError when max_pending requests are waiting, EngineStoppedError after stop().
  // Every accepted request's stream ends with exactly one output with finished == true,
  // which must be taken (get or poll) for the request to be forgotten.
  int64_t submit(std::vector<int32_t> prompt_token_ids, const SamplingParams& params);

  // Asks the loop to finish the request with reason "abort" and free its blocks; returns at
  // once. Its final output still arrives on its stream. Unknown or finished ids are ignored.
  void abort(int64_t request_id);

  // Takes every output queued for one request, waiting up to `timeout` for the first;
  // empty on timeout. Throws std::out_of_range for an id that is not (or no longer) known.
  std::vector<RequestOutput> get(int64_t request_id, Clock::duration timeout);

  // Takes every output queued for any request (each request's in order), waiting up to
  // `timeout` for the first; empty on timeout. Lets one consumer thread serve all streams.
  std::vector<RequestOutput> poll(Clock::duration timeout);

  // A snapshot taken after the loop's latest change to the engine; it already counts
  // every output that get() or poll() returned.
  EngineStats stats() const;

  // Finishes every unfinished request with reason "abort", joins the loop thread.
  // Idempotent; submit() throws EngineStoppedError afterwards.
  void stop();

  // Empty while the loop runs; what made it stop if the engine threw.
  std::string error() const;

  // Fixed at construction, so safe to read from any thread.
  const EngineConfig& config() const { return engine_->config(); }
  const ModelInfo& model_info() const { return engine_->model_info(); }
  int max_model_len() const { return engine_->max_model_len(); }

 private:
  struct Submission {
    std::vector<int32_t> prompt_token_ids;
    SamplingParams params;
    std::promise<int64_t> id;
  };

  void run();
  // Loop-thread helpers: the engine and active_ are touched only there.
  void admit(std::vector<Submission>& submissions);
  void publish(std::vector<RequestOutput> outputs);
  void publish_stats();
  void fail(const std::string& message);
  // Moves a stream's outputs into `into`, with outbox_mutex_ held; forgets the request
  // once its final output is taken.
  void take(std::unordered_map<int64_t, std::deque<RequestOutput>>::iterator stream,
            std::vector<RequestOutput>& into);

  const std::unique_ptr<LLMEngine> engine_;
  const int max_pending_;
  std::unordered_set<int64_t> active_;  // accepted, final output not yet published

  // Inbox: what clients ask of the loop; the loop sleeps on inbox_cv_ when it has nothing
  // to do. The stats snapshot lives here too, because admission control reads it.
  mutable std::mutex inbox_mutex_;
  std::condition_variable inbox_cv_;
  std::vector<Submission> submissions_;
  std::vector<int64_t> aborts_;
  EngineStats stats_;
  bool stopping_ = false;
  std::string error_;

  // Outbox: per-request streams, created at admission, erased when the final output is
  // taken. num_queued_ counts outputs in all streams, so poll() knows when to wake.
  std::mutex outbox_mutex_;
  std::condition_variable outbox_cv_;
  std::unordered_map<int64_t, std::deque<RequestOutput>> streams_;
  size_t num_queued_ = 0;

  std::once_flag stop_once_;
  std::thread thread_;
};

}  // namespace nanovllm
