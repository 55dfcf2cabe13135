// AVX-512 building blocks of the element-wise CPU kernels: bfloat16 <-> float and e^x.
// Each function carries the AVX-512 target itself, so including files need no special
// compiler flags; call them only from functions marked NANOVLLM_AVX512, and only after
// avx512::supported() said yes. All are static inline (local to each including file),
// so no AVX-512 copy can be picked by the linker for code that runs without it.
#pragma once

#include <cstdint>

#include <immintrin.h>

#define NANOVLLM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

namespace nanovllm::kernels::cpu::avx512 {

// Whether this CPU runs the NANOVLLM_AVX512 code paths.
inline bool supported() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return yes;
}

// Lanes [0, n) set, n <= 16: the tail of a row.
NANOVLLM_AVX512 static inline __mmask16 tail_mask(int64_t n) {
  return static_cast<__mmask16>(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
}

// bfloat16 is the upper half of a float32.
NANOVLLM_AVX512 static inline __m512 load_bf16(const uint16_t* p, __mmask16 mask = 0xFFFF) {
  const __m256i bits = _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// v rounded to bfloat16 (to nearest even, as c10::BFloat16 does), still as float32; NaN
// becomes the quiet NaN 0x7FC0.
NANOVLLM_AVX512 static inline __m512 round_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i biased = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  __m512i rounded = _mm512_and_si512(biased, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u)));
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  rounded = _mm512_mask_mov_epi32(rounded, nan, _mm512_set1_epi32(0x7FC00000));
  return _mm512_castsi512_ps(rounded);
}

NANOVLLM_AVX512 static inline void store_bf16(uint16_t* p, __m512 v, __mmask16 mask = 0xFFFF) {
  const __m512i upper = _mm512_srli_epi32(_mm512_castps_si512(round_bf16(v)), 16);
  _mm256_mask_storeu_epi16(p, mask, _mm512_cvtepi32_epi16(upper));
}

NANOVLLM_AVX512 static inline __m512 load_f32(const float* p, __mmask16 mask = 0xFFFF) {
  return _mm512_maskz_loadu_ps(mask, p);
}

NANOVLLM_AVX512 static inline void store_f32(float* p, __m512 v, __mmask16 mask = 0xFFFF) {
  _mm512_mask_storeu_ps(p, mask, v);
}

// The sum of the lanes, in lane order. (_mm512_reduce_add_ps trips GCC 12's
// -Wuninitialized inside its own header.)
NANOVLLM_AVX512 static inline float sum_lanes(__m512 v) {
  float lanes[16];
  _mm512_storeu_ps(lanes, v);
  float total = 0.0f;
  for (float lane : lanes) total += lane;
  return total;
}

// 2^x for x <= 0 (~0 below -126) by the Cephes exp2f polynomial on [-0.5, 0.5], relative
// error ~2e-7.
NANOVLLM_AVX512 static inline __m512 exp2_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-126.0f));
  const __m512 whole = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, whole);
  __m512 p = _mm512_set1_ps(1.535336188319500e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440266574e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, whole);
}

// e^x for x <= 0 (~0 below -87): 2^(x log2 e).
NANOVLLM_AVX512 static inline __m512 exp_nonpositive(__m512 x) {
  return exp2_nonpositive(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)));
}

}  // namespace nanovllm::kernels::cpu::avx512
