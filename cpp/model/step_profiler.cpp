#include "step_profiler.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

namespace nanovllm::profile {
namespace {

constexpr int kNumPhases = static_cast<int>(Phase::kCount);
constexpr const char* kPhaseNames[kNumPhases] = {
    "outside runner", "inputs", "embedding", "norms", "qkv proj", "rotary", "store kv",
    "attention", "o proj", "gate/up proj", "silu*mul", "down proj", "lm head", "sampling"};

// Bucket 0: steps with a prefill chunk; bucket b >= 1: decode steps of [2^(b-1), 2^b) seqs.
constexpr int kNumBuckets = 10;

struct Bucket {
  int64_t steps = 0;
  int64_t seqs = 0;
  int64_t tokens = 0;
  int64_t step_ns = 0;  // inside the runner, begin_step to end_step
  std::array<int64_t, kNumPhases> phase_ns{};
};

std::string bucket_name(int b) {
  if (b == 0) return "prefill (steps with a chunk of more than one token)";
  const int low = 1 << (b - 1);
  if (b == kNumBuckets - 1) return "decode, " + std::to_string(low) + "+ seqs";
  if (low == 1) return "decode, 1 seq";
  return "decode, " + std::to_string(low) + "-" + std::to_string(2 * low - 1) + " seqs";
}

class Profile {
 public:
  void begin_step(int num_seqs, int num_tokens) {
    const int64_t now = now_ns();
    const std::lock_guard lock(mutex_);
    bucket_ = 0;
    if (num_seqs == num_tokens) {
      bucket_ = 1;
      while (bucket_ < kNumBuckets - 1 && (num_seqs >> bucket_) > 0) ++bucket_;
    }
    Bucket& b = buckets_[bucket_];
    if (last_end_ != 0) b.phase_ns[static_cast<int>(Phase::kOutsideRunner)] += now - last_end_;
    b.steps += 1;
    b.seqs += num_seqs;
    b.tokens += num_tokens;
    step_start_ = now;
  }

  void end_step() {
    const int64_t now = now_ns();
    const std::lock_guard lock(mutex_);
    buckets_[bucket_].step_ns += now - step_start_;
    last_end_ = now;
  }

  void record(Phase phase, int64_t ns) {
    const std::lock_guard lock(mutex_);
    buckets_[bucket_].phase_ns[static_cast<int>(phase)] += ns;
  }

  // At exit, when anything was recorded.
  ~Profile() {
    bool any = false;
    for (const Bucket& b : buckets_) any = any || b.steps > 0;
    if (!any) return;
    std::fprintf(stderr, "\nnanovllm profile (NANOVLLM_PROFILE=1): wall time per step\n");
    for (int i = 0; i < kNumBuckets; ++i) {
      const Bucket& b = buckets_[i];
      if (b.steps == 0) continue;
      const double steps = static_cast<double>(b.steps);
      const double step_ms = static_cast<double>(b.step_ns) / steps / 1e6;
      std::fprintf(stderr,
                   "\n%s: %lld steps, %.1f seqs and %.1f tokens per step, %.2f ms per step in the "
                   "runner\n",
                   bucket_name(i).c_str(), static_cast<long long>(b.steps),
                   static_cast<double>(b.seqs) / steps, static_cast<double>(b.tokens) / steps, step_ms);
      std::fprintf(stderr, "  %-16s %10s %8s\n", "phase", "ms/step", "share");
      int64_t attributed = 0;
      for (int p = 0; p < kNumPhases; ++p) {
        const int64_t ns = b.phase_ns[p];
        if (p != static_cast<int>(Phase::kOutsideRunner)) attributed += ns;
        if (ns == 0) continue;
        const double ms = static_cast<double>(ns) / steps / 1e6;
        // Time outside the runner is not part of the step's share.
        if (p == static_cast<int>(Phase::kOutsideRunner)) {
          std::fprintf(stderr, "  %-16s %10.3f %8s\n", kPhaseNames[p], ms, "-");
        } else {
          std::fprintf(stderr, "  %-16s %10.3f %7.1f%%\n", kPhaseNames[p], ms, 100.0 * ms / step_ms);
        }
      }
      const double other_ms = static_cast<double>(b.step_ns - attributed) / steps / 1e6;
      std::fprintf(stderr, "  %-16s %10.3f %7.1f%%\n", "other", other_ms, 100.0 * other_ms / step_ms);
    }
  }

 private:
  std::mutex mutex_;
  std::array<Bucket, kNumBuckets> buckets_{};
  int bucket_ = 0;
  int64_t step_start_ = 0;
  int64_t last_end_ = 0;
};

Profile& profile() {
  static Profile instance;
  return instance;
}

}  // namespace

bool enabled() {
  static const bool on = [] {
    const char* value = std::getenv("NANOVLLM_PROFILE");
    return value != nullptr && *value != '\0' && std::strcmp(value, "0") != 0;
  }();
  return on;
}

void begin_step(int num_seqs, int num_tokens) {
  if (enabled()) profile().begin_step(num_seqs, num_tokens);
}

void end_step() {
  if (enabled()) profile().end_step();
}

void record(Phase phase, int64_t nanoseconds) { profile().record(phase, nanoseconds); }

}  // namespace nanovllm::profile
