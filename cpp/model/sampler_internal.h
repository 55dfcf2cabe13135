// The sampler's steps that tests check value by value; not part of the public API.
#pragma once

#include <bit>
#include <cstdint>

#include "sampler.h"

namespace nanovllm::detail {

// Turns one row of raw float32 logits, in place, into the logits the sampler chooses from
// (vLLM's order): repetition penalty on every token of prompt and output, then frequency
// and presence penalties from the output counts, then banned ids to -inf. Only the
// entries of tokens that occur (or are banned) are touched. Ids outside [0, vocab_size)
// have no logit to change and are skipped.
void process_logits_row(float* logits, int64_t vocab_size, const SamplingRow& row);

// e^x for x <= 0, within ~2 ulp of float, and 0 below -80 (a probability under 2e-35 of
// the best token's) and for NaN. Plain branch-free arithmetic: the compiler vectorises the
// loops that call it, and the result is the same bits on every machine (no libm version or
// CPU dispatch behind it), which the draw order relies on.
inline float exp_nonpositive(float x) {
  constexpr float kMin = -80.0f;
  constexpr float kLog2e = 1.44269504f;
  constexpr float kLn2High = 0.693359375f;  // few mantissa bits: n * kLn2High is exact
  constexpr float kLn2Low = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  // x = n ln2 + r with |r| <= ln2 / 2, so e^x = 2^n e^r.
  const float shifted = x * kLog2e + kRound;
  const float n = shifted - kRound;
  const float r = (x - n * kLn2High) - n * kLn2Low;
  // Taylor series to r^7 / 7!: for |r| <= ln2 / 2 the truncation error is below 2^-27.
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n from the integer in shifted's low mantissa bits (unsigned: no overflow on garbage).
  const uint32_t exponent_bits =
      (std::bit_cast<uint32_t>(shifted) - std::bit_cast<uint32_t>(kRound) + 127u) << 23;
  const float value = p * std::bit_cast<float>(exponent_bits);
  // Below kMin (where 2^n leaves the normal range) and for NaN the bits above are garbage:
  // mask them to 0. A float select instead would keep the loop from vectorising under the
  // default -ftrapping-math.
  const uint32_t keep = 0u - static_cast<uint32_t>(x >= kMin);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(value) & keep);
}

}  // namespace nanovllm::detail
