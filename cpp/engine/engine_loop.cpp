#include "nanovllm/engine_loop.h"

#include <exception>
#include <utility>

#include "validation.h"

namespace nanovllm {

EngineLoop::EngineLoop(std::unique_ptr<LLMEngine> engine, int max_pending)
    : engine_(std::move(engine)), max_pending_(max_pending) {
  if (max_pending < 1) detail::reject("max_pending", max_pending, "must be >= 1");
  stats_ = engine_->stats();
  thread_ = std::thread([this] { run(); });
}

EngineLoop::~EngineLoop() { stop(); }

int64_t EngineLoop::submit(std::vector<int32_t> prompt_token_ids, const SamplingParams& params) {
  std::future<int64_t> id;
  {
    std::lock_guard lock(inbox_mutex_);
    if (stopping_) {
      throw EngineStoppedError(error_.empty() ? "the engine loop is stopped"
                                              : "the engine loop failed: " + error_);
    }
    // Requests the engine has not scheduled yet: its waiting queue plus the inbox.
    const size_t pending = static_cast<size_t>(stats_.num_waiting) + submissions_.size();
    if (pending >= static_cast<size_t>(max_pending_)) {
      throw QueueFullError(std::to_string(pending) +
                           " requests are waiting to be scheduled (max_pending = " +
                           std::to_string(max_pending_) + "); retry later");
    }
    submissions_.push_back({std::move(prompt_token_ids), params, {}});
    id = submissions_.back().id.get_future();
  }
  inbox_cv_.notify_one();
  return id.get();
}

void EngineLoop::abort(int64_t request_id) {
  {
    std::lock_guard lock(inbox_mutex_);
    if (stopping_) return;  // stop() aborts everything anyway
    aborts_.push_back(request_id);
  }
  inbox_cv_.notify_one();
}

std::vector<RequestOutput> EngineLoop::get(int64_t request_id, Clock::duration timeout) {
  std::vector<RequestOutput> outputs;
  std::unique_lock lock(outbox_mutex_);
  if (!streams_.contains(request_id)) {
    throw std::out_of_range("request " + std::to_string(request_id) +
                            " is unknown, or its final output was already taken");
  }
  // Another consumer may take the final output (and erase the stream) while this one waits.
  outbox_cv_.wait_for(lock, timeout, [&] {
    auto stream = streams_.find(request_id);
    return stream == streams_.end() || !stream->second.empty();
  });
  if (auto stream = streams_.find(request_id); stream != streams_.end()) take(stream, outputs);
  return outputs;
}

std::vector<RequestOutput> EngineLoop::poll(Clock::duration timeout) {
  std::vector<RequestOutput> outputs;
  std::unique_lock lock(outbox_mutex_);
  if (!outbox_cv_.wait_for(lock, timeout, [&] { return num_queued_ > 0; })) return outputs;
  for (auto stream = streams_.begin(); stream != streams_.end();) {
    // take() may erase the stream, so step past it first.
    auto current = stream++;
    if (!current->second.empty()) take(current, outputs);
  }
  return outputs;
}

void EngineLoop::take(std::unordered_map<int64_t, std::deque<RequestOutput>>::iterator stream,
                      std::vector<RequestOutput>& into) {
  std::deque<RequestOutput>& queue = stream->second;
  num_queued_ -= queue.size();
  const bool finished = !queue.empty() && queue.back().finished;
  into.insert(into.end(), std::make_move_iterator(queue.begin()),
              std::make_move_iterator(queue.end()));
  if (finished) {
    streams_.erase(stream);
  } else {
    queue.clear();
  }
}

EngineStats EngineLoop::stats() const {
  std::lock_guard lock(inbox_mutex_);
  return stats_;
}

std::string EngineLoop::error() const {
  std::lock_guard lock(inbox_mutex_);
  return error_;
}

void EngineLoop::stop() {
  std::call_once(stop_once_, [this] {
    {
      std::lock_guard lock(inbox_mutex_);
      stopping_ = true;
    }
    inbox_cv_.notify_one();
    thread_.join();
  });
}

void EngineLoop::run() {
  try {
    for (;;) {
      std::vector<Submission> submissions;
      std::vector<int64_t> aborts;
      bool stopping = false;
      {
        std::unique_lock lock(inbox_mutex_);
        inbox_cv_.wait(lock, [&] {
          return stopping_ || !submissions_.empty() || !aborts_.empty() || !active_.empty();
        });
        submissions.swap(submissions_);
        aborts.swap(aborts_);
        // Seen together with the inbox drained under the same lock: once stopping_ is
        // observed here, no submission can slip in behind it.
        stopping = stopping_;
      }
      admit(submissions);
      for (int64_t id : aborts) engine_->abort(id);
      if (stopping) {
        for (int64_t id : active_) engine_->abort(id);
      }
      std::vector<RequestOutput> outputs;
      if (!active_.empty()) outputs = engine_->step();
      // Stats first: whoever receives an output then sees stats that already include it.
      publish_stats();
      publish(std::move(outputs));
      if (stopping && active_.empty()) return;
    }
  } catch (const std::exception& e) {
    fail(e.what());
  }
}

void EngineLoop::admit(std::vector<Submission>& submissions) {
  if (submissions.empty()) return;
  std::vector<int64_t> ids(submissions.size(), -1);
  std::vector<std::exception_ptr> errors(submissions.size());
  for (size_t i = 0; i < submissions.size(); ++i) {
    try {
      ids[i] = engine_->add_request(std::move(submissions[i].prompt_token_ids),
                                    submissions[i].params);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  }
  {
    std::lock_guard lock(outbox_mutex_);
    for (int64_t id : ids) {
      if (id < 0) continue;
      active_.insert(id);
      streams_.try_emplace(id);
    }
  }
  // The snapshot must count the new waiting requests before any submitter returns, so a
  // client that submits again right away meets the admission bound it expects.
  publish_stats();
  for (size_t i = 0; i < submissions.size(); ++i) {
    if (errors[i]) {
      submissions[i].id.set_exception(errors[i]);
    } else {
      submissions[i].id.set_value(ids[i]);
    }
  }
}

void EngineLoop::publish(std::vector<RequestOutput> outputs) {
  if (outputs.empty()) return;
  {
    std::lock_guard lock(outbox_mutex_);
    for (RequestOutput& output : outputs) {
      if (output.finished) active_.erase(output.request_id);
      streams_[output.request_id].push_back(std::move(output));
    }
    num_queued_ += outputs.size();
  }
  outbox_cv_.notify_all();
}

void EngineLoop::publish_stats() {
  EngineStats stats = engine_->stats();
  std::lock_guard lock(inbox_mutex_);
  stats_ = stats;
}

void EngineLoop::fail(const std::string& message) {
  std::vector<Submission> unadmitted;
  {
    std::lock_guard lock(inbox_mutex_);
    stopping_ = true;
    error_ = message;
    unadmitted.swap(submissions_);
  }
  for (Submission& submission : unadmitted) {
    submission.id.set_exception(
        std::make_exception_ptr(EngineStoppedError("the engine loop failed: " + message)));
  }
  // The engine's state is unknown after it threw, so the loop ends every request itself.
  std::vector<RequestOutput> finals;
  for (int64_t id : active_) {
    RequestOutput output;
    output.request_id = id;
    output.finished = true;
    output.finish_reason = FinishReason::kAbort;
    finals.push_back(std::move(output));
  }
  publish(std::move(finals));
}

}  // namespace nanovllm
