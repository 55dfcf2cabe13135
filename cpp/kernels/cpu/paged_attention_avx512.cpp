// AVX-512 page kernel. The build compiles this file alone with -mavx512f (see
// cpp/model/CMakeLists.txt); the kernel is only handed out when the CPU has AVX-512F.
//
// Each page's keys and values are first widened to float in scratch (shared by every row
// of the tile). Scores then take one of two layouts:
//  - many rows (prefill): 16 query rows in the lanes of a vector. Q·Kᵀ needs neither a
//    transpose of the cached keys nor horizontal sums (each key element is broadcast), and
//    the softmax bookkeeping is lane-wise too.
//  - few rows (decode): 16 keys in the lanes, one row at a time, with the sixteen dot
//    products reduced together; 16-row vectors would be mostly padding here.
// Values are accumulated with head_dim in the lanes either way.
#include "paged_attention_tile.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace nanovllm::kernels::cpu::attention {

#if defined(__AVX512F__)
namespace {

struct BFloat16 {};
struct Float16 {};

template <typename T>
constexpr int kElementBytes = 2;
template <>
constexpr int kElementBytes<float> = 4;

// Sixteen cache elements starting at p, as float.
template <typename T>
__m512 load16(const char* p);
template <>
inline __m512 load16<float>(const char* p) {
  return _mm512_loadu_ps(p);
}
template <>
inline __m512 load16<BFloat16>(const char* p) {
  // bfloat16 is the upper half of a float32.
  const __m512i widened = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(widened, 16));
}
template <>
inline __m512 load16<Float16>(const char* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// 2^x for x <= 0 (Cephes exp2f polynomial on [-0.5, 0.5], relative error ~2e-7).
// Arguments below -126 give ~0; callers mask rows that must be exactly 0.
inline __m512 exp2(__m512 x) {
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

// Copies `count` cache rows (head_dim elements each, `stride` elements apart) into a dense
// float array.
template <typename T>
inline void rows_to_float(float* dst, const void* src, int64_t stride, int count, int head_dim) {
  const char* base = static_cast<const char*>(src);
  for (int j = 0; j < count; ++j) {
    const char* row = base + j * stride * kElementBytes<T>;
    for (int d = 0; d < head_dim; d += 16) {
      _mm512_storeu_ps(dst + j * head_dim + d, load16<T>(row + d * kElementBytes<T>));
    }
  }
}

// scores[j][rows] = Q·k_j for 8 keys at a time: eight independent FMA chains keep the
// FMA units busy despite their latency.
inline void compute_scores(const Tile& tile, const float* keys, int padded_keys, float* scores) {
  const int head_dim = tile.head_dim;
  const int lanes = tile.padded_rows;
  for (int j0 = 0; j0 < padded_keys; j0 += 8) {
    const float* k = keys + j0 * head_dim;
    for (int r0 = 0; r0 < lanes; r0 += 16) {
      __m512 s[8];
      for (int i = 0; i < 8; ++i) s[i] = _mm512_setzero_ps();
      const float* q = tile.query_t + r0;
      for (int d = 0; d < head_dim; ++d) {
        const __m512 qd = _mm512_loadu_ps(q + d * lanes);
        for (int i = 0; i < 8; ++i) {
          s[i] = _mm512_fmadd_ps(qd, _mm512_set1_ps(k[i * head_dim + d]), s[i]);
        }
      }
      for (int i = 0; i < 8; ++i) _mm512_storeu_ps(scores + (j0 + i) * lanes + r0, s[i]);
    }
  }
}

// Online softmax over the page's keys, 16 rows per step: updates max and sum, turns the
// scores into probabilities (0 where a key is in a row's future) and records by how much
// each row's accumulator must shrink.
inline void update_softmax(const Tile& tile, const Page& page, float* scores, float* rescale) {
  const int lanes = tile.padded_rows;
  for (int r0 = 0; r0 < lanes; r0 += 16) {
    const __m512i positions =
        _mm512_loadu_si512(reinterpret_cast<const void*>(tile.positions + r0));
    const __m512 old_max = _mm512_loadu_ps(tile.max + r0);
    __m512 new_max = old_max;
    for (int j = 0; j < page.num_keys; ++j) {
      const __mmask16 visible =
          _mm512_cmpge_epi32_mask(positions, _mm512_set1_epi32(page.first_position + j));
      new_max = _mm512_mask_max_ps(new_max, visible, new_max, _mm512_loadu_ps(scores + j * lanes + r0));
    }
    // A row that has seen nothing yet keeps max -inf; subtracting a finite stand-in keeps
    // the exponentials at 0 instead of NaN.
    const __m512 base = _mm512_max_ps(new_max, _mm512_set1_ps(-3.0e38f));
    const __m512 shrink = exp2(_mm512_sub_ps(old_max, base));
    __m512 sum = _mm512_mul_ps(_mm512_loadu_ps(tile.sum + r0), shrink);
    for (int j = 0; j < page.num_keys; ++j) {
      float* s = scores + j * lanes + r0;
      const __mmask16 visible =
          _mm512_cmpge_epi32_mask(positions, _mm512_set1_epi32(page.first_position + j));
      const __m512 p = _mm512_maskz_mov_ps(visible, exp2(_mm512_sub_ps(_mm512_loadu_ps(s), base)));
      _mm512_storeu_ps(s, p);
      sum = _mm512_add_ps(sum, p);
    }
    _mm512_storeu_ps(tile.max + r0, new_max);
    _mm512_storeu_ps(tile.sum + r0, sum);
    _mm512_storeu_ps(rescale + r0, shrink);
  }
}

// For ROWS rows and CHUNKS 16-float slices of head_dim:
//   acc = acc * rescale + Σ_j p_j · v_j.
// Two rows share each value load and give eight independent FMA chains.
template <int ROWS, int CHUNKS>
inline void accumulate(float* acc, const float* rescale, const float* probs, int prob_stride,
                       const float* values, int head_dim, int num_keys) {
  __m512 a[ROWS][CHUNKS];
  for (int r = 0; r < ROWS; ++r) {
    const __m512 shrink = _mm512_set1_ps(rescale[r]);
    for (int c = 0; c < CHUNKS; ++c) {
      a[r][c] = _mm512_mul_ps(_mm512_loadu_ps(acc + r * head_dim + 16 * c), shrink);
    }
  }
  for (int j = 0; j < num_keys; ++j) {
    __m512 v[CHUNKS];
    for (int c = 0; c < CHUNKS; ++c) v[c] = _mm512_loadu_ps(values + j * head_dim + 16 * c);
    for (int r = 0; r < ROWS; ++r) {
      const __m512 p = _mm512_set1_ps(probs[j * prob_stride + r]);
      for (int c = 0; c < CHUNKS; ++c) a[r][c] = _mm512_fmadd_ps(p, v[c], a[r][c]);
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    for (int c = 0; c < CHUNKS; ++c) _mm512_storeu_ps(acc + r * head_dim + 16 * c, a[r][c]);
  }
}

// accumulate() over all of head_dim, 64 floats at a time where it can.
template <int ROWS>
inline void accumulate_rows(float* acc, int head_dim, const float* rescale, const float* probs,
                            int prob_stride, const float* values, int num_keys) {
  int d = 0;
  for (; d + 64 <= head_dim; d += 64) {
    accumulate<ROWS, 4>(acc + d, rescale, probs, prob_stride, values + d, head_dim, num_keys);
  }
  for (; d < head_dim; d += 16) {
    accumulate<ROWS, 1>(acc + d, rescale, probs, prob_stride, values + d, head_dim, num_keys);
  }
}

// Lane i of the result is the sum of the lanes of v[i]: a transpose-and-add tree, 45
// instructions for sixteen horizontal sums.
inline __m512 sum_each(const __m512 (&v)[16]) {
  __m512 pairs[8];  // per 128-bit lane: partial sums of v[2i], v[2i+1], interleaved
  for (int i = 0; i < 8; ++i) {
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                             _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  }
  __m512 quads[4];  // per 128-bit lane: partial sums of v[4i..4i+3], in order
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(pairs[2 * i]);
    const __m512d b = _mm512_castps_pd(pairs[2 * i + 1]);
    quads[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // Add the four 128-bit lanes of each quad: 0x88 picks lanes 0 and 2 of each operand,
  // 0xDD lanes 1 and 3.
  __m512 halves[2];
  for (int i = 0; i < 2; ++i) {
    halves[i] = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2 * i], quads[2 * i + 1], 0x88),
                              _mm512_shuffle_f32x4(quads[2 * i], quads[2 * i + 1], 0xDD));
  }
  return _mm512_add_ps(_mm512_shuffle_f32x4(halves[0], halves[1], 0x88),
                       _mm512_shuffle_f32x4(halves[0], halves[1], 0xDD));
}

// Tiles of many rows (prefill): 16 rows in the lanes of a vector.
template <typename T>
void page_kernel_many_rows(const Tile& tile, const Page& page) {
  const int head_dim = tile.head_dim;
  const int n = page.num_keys;
  const int padded_keys = (n + 7) / 8 * 8;
  float* keys = tile.scratch;
  float* values = keys + padded_keys * head_dim;
  float* scores = values + n * head_dim;
  float* rescale = scores + padded_keys * tile.padded_rows;

  rows_to_float<T>(keys, page.key, page.token_stride, n, head_dim);
  for (int i = n * head_dim; i < padded_keys * head_dim; ++i) keys[i] = 0.0f;
  rows_to_float<T>(values, page.value, page.token_stride, n, head_dim);

  compute_scores(tile, keys, padded_keys, scores);
  update_softmax(tile, page, scores, rescale);

  const int lanes = tile.padded_rows;
  int r = 0;
  for (; r + 2 <= tile.rows; r += 2) {
    accumulate_rows<2>(tile.acc + r * head_dim, head_dim, rescale + r, scores + r, lanes, values, n);
  }
  if (r < tile.rows) {
    accumulate_rows<1>(tile.acc + r * head_dim, head_dim, rescale + r, scores + r, lanes, values, n);
  }
}

// Tiles of a few rows (decode: one token's query heads of a kv head): 16 keys in the
// lanes of a vector, one row at a time, so no lanes sit idle for want of rows.
template <typename T>
void page_kernel_few_rows(const Tile& tile, const Page& page) {
  const int head_dim = tile.head_dim;
  const int n = page.num_keys;
  const int padded_keys = (n + 15) / 16 * 16;
  float* keys = tile.scratch;
  float* values = keys + padded_keys * head_dim;
  float* probs = values + n * head_dim;

  rows_to_float<T>(keys, page.key, page.token_stride, n, head_dim);
  for (int i = n * head_dim; i < padded_keys * head_dim; ++i) keys[i] = 0.0f;
  rows_to_float<T>(values, page.value, page.token_stride, n, head_dim);

  for (int j0 = 0; j0 < n; j0 += 16) {
    const float* k = keys + j0 * head_dim;
    for (int r = 0; r < tile.rows; ++r) {
      const int ahead = tile.positions[r] - (page.first_position + j0) + 1;
      const int visible = ahead < n - j0 ? ahead : n - j0;
      if (visible <= 0) continue;
      const float* q = tile.query + r * head_dim;
      __m512 partial[16];
      for (int i = 0; i < 16; ++i) partial[i] = _mm512_setzero_ps();
      for (int d = 0; d < head_dim; d += 16) {
        const __m512 qd = _mm512_loadu_ps(q + d);
        for (int i = 0; i < 16; ++i) {
          partial[i] = _mm512_fmadd_ps(qd, _mm512_loadu_ps(k + i * head_dim + d), partial[i]);
        }
      }
      const __mmask16 mask = visible >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << visible) - 1);
      const __m512 s = _mm512_mask_mov_ps(_mm512_set1_ps(-__builtin_inff()), mask, sum_each(partial));
      const float old_max = tile.max[r];
      const float page_max = _mm512_reduce_max_ps(s);
      const float new_max = old_max > page_max ? old_max : page_max;
      const float shrink = _mm512_cvtss_f32(exp2(_mm512_set1_ps(old_max - new_max)));
      const __m512 p = _mm512_maskz_mov_ps(mask, exp2(_mm512_sub_ps(s, _mm512_set1_ps(new_max))));
      tile.max[r] = new_max;
      tile.sum[r] = tile.sum[r] * shrink + _mm512_reduce_add_ps(p);
      _mm512_storeu_ps(probs, p);
      accumulate_rows<1>(tile.acc + r * head_dim, head_dim, &shrink, probs, 1,
                         values + j0 * head_dim, visible);
    }
  }
}

// Up to this many rows per tile, the 16-row vectors of page_kernel_many_rows would be
// mostly padding. Measured for head_dim 64, bf16 decode: the few-rows kernel is 1.2-1.7x
// faster at 2-4 rows, even at 5-6, slower at 7.
constexpr int kFewRows = 4;

template <typename T>
void page_kernel(const Tile& tile, const Page& page) {
  if (tile.rows <= kFewRows) {
    page_kernel_few_rows<T>(tile, page);
  } else {
    page_kernel_many_rows<T>(tile, page);
  }
}

}  // namespace

PageKernel avx512_page_kernel(CacheDtype dtype, int head_dim) {
  if (head_dim % 16 != 0 || !__builtin_cpu_supports("avx512f")) return nullptr;
  switch (dtype) {
    case CacheDtype::kFloat32: return page_kernel<float>;
    case CacheDtype::kBFloat16: return page_kernel<BFloat16>;
    case CacheDtype::kFloat16: return page_kernel<Float16>;
  }
  return nullptr;
}

#else

PageKernel avx512_page_kernel(CacheDtype, int) { return nullptr; }

#endif

}  // namespace nanovllm::kernels::cpu::attention
