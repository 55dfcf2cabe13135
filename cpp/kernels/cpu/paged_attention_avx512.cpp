// AVX-512 page kernel. The build compiles this file alone with -mavx512f -mavx512bw
// -mavx512vl (see cpp/model/CMakeLists.txt); the kernel is only handed out when the CPU
// has them (avx512::supported()).
//
// Each page's keys and values are first widened to float in scratch (shared by every row
// of the tile). Scores then take one of two layouts:
//  - many rows (prefill): 16 query rows in the lanes of a vector. Q·Kᵀ needs neither a
//    transpose of the cached keys nor horizontal sums (each key element is broadcast), and
//    the softmax bookkeeping is lane-wise too.
//  - few rows (decode): 16 keys in the lanes, one row at a time, with the sixteen dot
//    products reduced together; 16-row vectors would be mostly padding here.
// Values are accumulated with head_dim in the lanes either way.
//
// On a bfloat16 cache where the CPU has AVX512-BF16, tiles of up to 16 rows (decode,
// including GQA groups of 5-16 query heads) skip the widening: 16 keys in the lanes, keys
// transposed into pairs of elements, and vdpbf16ps multiplies two elements per lane.
#include "paged_attention_tile.h"

#if defined(__AVX512F__)
#include <immintrin.h>

#include "avx512_math.h"
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
    const __m512 shrink = avx512::exp2_nonpositive(_mm512_sub_ps(old_max, base));
    __m512 sum = _mm512_mul_ps(_mm512_loadu_ps(tile.sum + r0), shrink);
    for (int j = 0; j < page.num_keys; ++j) {
      float* s = scores + j * lanes + r0;
      const __mmask16 visible =
          _mm512_cmpge_epi32_mask(positions, _mm512_set1_epi32(page.first_position + j));
      const __m512 p = _mm512_maskz_mov_ps(visible, avx512::exp2_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(s), base)));
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
      const float shrink = _mm512_cvtss_f32(avx512::exp2_nonpositive(_mm512_set1_ps(old_max - new_max)));
      const __m512 p = _mm512_maskz_mov_ps(mask, avx512::exp2_nonpositive(_mm512_sub_ps(s, _mm512_set1_ps(new_max))));
      tile.max[r] = new_max;
      tile.sum[r] = tile.sum[r] * shrink + _mm512_reduce_add_ps(p);
      _mm512_storeu_ps(probs, p);
      accumulate_rows<1>(tile.acc + r * head_dim, head_dim, &shrink, probs, 1,
                         values + j0 * head_dim, visible);
    }
  }
}

#define NANOVLLM_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// Transposes a 16x16 matrix of 32-bit words held one row per vector.
NANOVLLM_AVX512_BF16 inline void transpose16(__m512i (&m)[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(m[i], m[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(m[i], m[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    m[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    m[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    m[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    m[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // Each 128-bit lane now holds a 4x4 block; move the blocks into place.
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(m[i], m[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(m[i + 8], m[i + 12], 0x88);
    t[i + 8] = _mm512_shuffle_i32x4(m[i], m[i + 4], 0xDD);
    t[i + 12] = _mm512_shuffle_i32x4(m[i + 8], m[i + 12], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    m[i] = _mm512_shuffle_i32x4(t[i], t[i + 4], 0x88);
    m[i + 4] = _mm512_shuffle_i32x4(t[i + 8], t[i + 12], 0x88);
    m[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 4], 0xDD);
    m[i + 12] = _mm512_shuffle_i32x4(t[i + 8], t[i + 12], 0xDD);
  }
}

// acc + the products of 16 words of bfloat16 pairs with one pair, broadcast.
NANOVLLM_AVX512_BF16 inline __m512 dot_pairs(__m512 acc, const __m512i* words, uint32_t pair) {
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(_mm512_loadu_si512(words)),
                          reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(pair))));
}

// acc[r] = acc[r] * rescale[r] + Σ_i pairs of (probability, value) for ROWS rows: each
// vdpbf16ps adds two keys' products for 16 elements of head_dim.
template <int ROWS>
NANOVLLM_AVX512_BF16 inline void accumulate_pairs(float* acc, int head_dim, const float* rescale,
                                                  const uint32_t* prob_pairs, const __m512i* value_pairs,
                                                  int num_pairs) {
  for (int c = 0; c < head_dim / 16; c += 4) {
    const int chunks = head_dim / 16 - c < 4 ? head_dim / 16 - c : 4;
    __m512 a[ROWS][4];
    for (int r = 0; r < ROWS; ++r) {
      for (int k = 0; k < chunks; ++k) {
        const __m512 old = _mm512_loadu_ps(acc + r * head_dim + 16 * (c + k));
        a[r][k] = _mm512_mul_ps(old, _mm512_set1_ps(rescale[r]));
      }
    }
    for (int i = 0; i < num_pairs; ++i) {
      const __m512i* v = value_pairs + i * (head_dim / 16) + c;
      for (int r = 0; r < ROWS; ++r) {
        const __m512bh p =
            reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(prob_pairs[r * 8 + i])));
        for (int k = 0; k < chunks; ++k) {
          a[r][k] = _mm512_dpbf16_ps(a[r][k], p, reinterpret_cast<__m512bh>(_mm512_loadu_si512(v + k)));
        }
      }
    }
    for (int r = 0; r < ROWS; ++r) {
      for (int k = 0; k < chunks; ++k) _mm512_storeu_ps(acc + r * head_dim + 16 * (c + k), a[r][k]);
    }
  }
}

// Tiles on a bfloat16 cache, with AVX512-BF16: 16 keys in the lanes, the cached keys and
// values used as they are (no widening to float), two elements per multiply-add.
// Probabilities are rounded to bfloat16 for the product with the values, as PyTorch's CPU
// flash attention does. Needs head_dim a multiple of 32.
NANOVLLM_AVX512_BF16 void page_kernel_bf16_pairs(const Tile& tile, const Page& page) {
  const int head_dim = tile.head_dim;
  const int pairs = head_dim / 2;  // 32-bit words per row
  const int chunks = head_dim / 16;
  const auto* keys = static_cast<const uint32_t*>(page.key);
  const auto* values = static_cast<const uint16_t*>(page.value);
  const int64_t stride = page.token_stride;  // elements
  // Scratch (not aligned: unaligned loads and stores only): keys transposed [pairs][16 keys],
  // values interleaved by key pairs [8][chunks][16 words], probabilities [rows][8 key
  // pairs] as bfloat16 pairs, each row's rescale factor.
  auto* keys_t = reinterpret_cast<__m512i*>(tile.scratch);
  __m512i* value_pairs = keys_t + pairs;
  auto* prob_pairs = reinterpret_cast<uint32_t*>(value_pairs + 8 * chunks);
  float* rescale = reinterpret_cast<float*>(prob_pairs + 8 * tile.rows);  // [rows]
  // Element i of the result takes element i of `a`, then of `b` (halves of 16 elements).
  const __m512i interleave_low = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9,
                                                   40, 8, 39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1,
                                                   32, 0);
  const __m512i interleave_high = _mm512_add_epi16(interleave_low, _mm512_set1_epi16(16));

  for (int j0 = 0; j0 < page.num_keys; j0 += 16) {
    const int n = page.num_keys - j0 < 16 ? page.num_keys - j0 : 16;
    // Keys past the page's end read as zeros (their probabilities are 0 too).
    for (int w = 0; w < pairs; w += 16) {
      __m512i block[16];
      for (int j = 0; j < 16; ++j) block[j] = _mm512_setzero_si512();
      for (int j = 0; j < n; ++j) block[j] = _mm512_loadu_si512(keys + (j0 + j) * stride / 2 + w);
      transpose16(block);
      for (int i = 0; i < 16; ++i) _mm512_storeu_si512(keys_t + w + i, block[i]);
    }
    for (int j = 0; j < 16; j += 2) {
      const uint16_t* a_row = values + (j0 + j) * stride;
      const uint16_t* b_row = a_row + stride;
      __m512i* out = value_pairs + (j / 2) * chunks;
      for (int d = 0; d < head_dim; d += 32) {
        const __m512i a = j < n ? _mm512_loadu_si512(a_row + d) : _mm512_setzero_si512();
        const __m512i b = j + 1 < n ? _mm512_loadu_si512(b_row + d) : _mm512_setzero_si512();
        _mm512_storeu_si512(out + d / 16, _mm512_permutex2var_epi16(a, interleave_low, b));
        _mm512_storeu_si512(out + d / 16 + 1, _mm512_permutex2var_epi16(a, interleave_high, b));
      }
    }

    for (int r = 0; r < tile.rows; ++r) {
      const int ahead = tile.positions[r] - (page.first_position + j0) + 1;
      const int visible = ahead < n ? ahead : n;
      rescale[r] = 1.0f;
      if (visible <= 0) {
        for (int i = 0; i < 8; ++i) prob_pairs[r * 8 + i] = 0;
        continue;
      }
      const uint32_t* q = tile.query_pairs + r * pairs;
      // Four independent chains hide the multiply-add's latency.
      __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      for (int w = 0; w < pairs; w += 4) {
        s0 = dot_pairs(s0, keys_t + w, q[w]);
        s1 = dot_pairs(s1, keys_t + w + 1, q[w + 1]);
        s2 = dot_pairs(s2, keys_t + w + 2, q[w + 2]);
        s3 = dot_pairs(s3, keys_t + w + 3, q[w + 3]);
      }
      const __mmask16 mask = static_cast<__mmask16>(visible >= 16 ? 0xFFFF : (1u << visible) - 1);
      const __m512 scores =
          _mm512_mask_mov_ps(_mm512_set1_ps(-__builtin_inff()), mask,
                             _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)),
                                           _mm512_set1_ps(tile.score_scale)));
      const float old_max = tile.max[r];
      const float page_max = _mm512_reduce_max_ps(scores);
      const float new_max = old_max > page_max ? old_max : page_max;
      rescale[r] = _mm512_cvtss_f32(avx512::exp2_nonpositive(_mm512_set1_ps(old_max - new_max)));
      const __m512 p = _mm512_maskz_mov_ps(mask, avx512::exp2_nonpositive(_mm512_sub_ps(scores, _mm512_set1_ps(new_max))));
      tile.max[r] = new_max;
      tile.sum[r] = tile.sum[r] * rescale[r] + _mm512_reduce_add_ps(p);
      // Sixteen bfloat16 in key order: eight pairs of consecutive keys.
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(prob_pairs + r * 8),
                          reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(p)));
    }

    const int num_pairs = (n + 1) / 2;
    int r = 0;
    for (; r + 4 <= tile.rows; r += 4) {
      accumulate_pairs<4>(tile.acc + r * head_dim, head_dim, rescale + r, prob_pairs + r * 8,
                          value_pairs, num_pairs);
    }
    float* acc = tile.acc + r * head_dim;
    switch (tile.rows - r) {
      case 3: accumulate_pairs<3>(acc, head_dim, rescale + r, prob_pairs + r * 8, value_pairs, num_pairs); break;
      case 2: accumulate_pairs<2>(acc, head_dim, rescale + r, prob_pairs + r * 8, value_pairs, num_pairs); break;
      case 1: accumulate_pairs<1>(acc, head_dim, rescale + r, prob_pairs + r * 8, value_pairs, num_pairs); break;
      default: break;
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

// bfloat16 with AVX512-BF16: the pairs kernel for tiles of up to 16 rows (decode:
// 1.3-1.5x faster than widening). Prefill tiles of 64 rows were measured no faster with it,
// so they keep float probabilities.
void page_kernel_bf16(const Tile& tile, const Page& page) {
  if (tile.rows <= 16) {
    page_kernel_bf16_pairs(tile, page);
  } else {
    page_kernel_many_rows<BFloat16>(tile, page);
  }
}

PageKernel avx512_page_kernel(CacheDtype dtype, int head_dim) {
  if (head_dim % 16 != 0 || !avx512::supported()) return nullptr;
  switch (dtype) {
    case CacheDtype::kFloat32: return page_kernel<float>;
    case CacheDtype::kBFloat16:
      if (head_dim % 32 == 0 && __builtin_cpu_supports("avx512bf16") &&
          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
        return page_kernel_bf16;
      }
      return page_kernel<BFloat16>;
    case CacheDtype::kFloat16: return page_kernel<Float16>;
  }
  return nullptr;
}

#else

PageKernel avx512_page_kernel(CacheDtype, int) { return nullptr; }

#endif

}  // namespace nanovllm::kernels::cpu::attention
