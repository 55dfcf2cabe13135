// Opt-in wall-time breakdown of the model runner's steps. With NANOVLLM_PROFILE=1 in the
// environment, every step is filed under its kind (prefill, or decode by batch size) and
// the time of each phase inside it is summed; the table goes to stderr when the process
// exits. Off (the default), a phase costs one predictable branch.
//
// Wall time is the right clock here: ATen's CPU ops are synchronous, and the thread pool's
// workers run inside the calling op.
#pragma once

#include <chrono>
#include <cstdint>

namespace nanovllm::profile {

enum class Phase : int {
  kOutsideRunner,  // from the end of one step to the start of the next: engine + caller
  kInputs,         // building the flat batch
  kEmbedding,
  kNorm,           // RMSNorm (+ residual add), per-head q/k norms
  kQKV,            // fused q/k/v projection
  kRotary,
  kStoreKV,
  kAttention,
  kOProj,
  kGateUp,         // fused gate/up projection
  kActivation,     // SiLU(gate) · up
  kDown,
  kLMHead,         // final norm of the sampled rows, LM head, float32 logits
  kSampling,
  kCount,
};

bool enabled();

// Opens a step of `num_seqs` chunks holding `num_tokens` tokens (decode when equal).
void begin_step(int num_seqs, int num_tokens);
void end_step();

void record(Phase phase, int64_t nanoseconds);

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Adds the time until the end of the scope to `phase` of the open step.
class Scope {
 public:
  explicit Scope(Phase phase) : phase_(phase), start_(enabled() ? now_ns() : 0) {}
  ~Scope() {
    if (start_ != 0) record(phase_, now_ns() - start_);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Phase phase_;
  int64_t start_;
};

}  // namespace nanovllm::profile
