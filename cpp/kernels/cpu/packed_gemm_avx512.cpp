// AVX-512 BF16 kernel of the packed-weight GEMM. The build compiles this file alone with
// -mavx512f -mavx512bw -mavx512vl -mavx512bf16 (see cpp/model/CMakeLists.txt); the kernel is only
// handed out when the CPU reports AVX-512 BF16.
//
// A block is up to 6 rows × one tile (4 panels): 24 float accumulators, each a chain of
// vdpbf16ps over the k pairs in order. Every output element therefore sums its products
// in the same order whatever the number of rows, so a row's result does not depend on the
// batch it is in.
//
// int8 weights are widened to bfloat16 in registers (exact: |q| <= 127 fits bfloat16's
// 8-bit significand). With few rows that costs less than the memory traffic it saves;
// with many rows a tile is widened once into scratch and reused by every row block.
//
// One row block (decode) streams the weights at memory speed with the hardware prefetcher
// alone. With several blocks per tile the first one runs at compute speed, and it also
// pulls the next tile into L2, so that the memory reads hide behind this tile's arithmetic.
#include "packed_gemm_kernel.h"

#if defined(__AVX512BF16__)
#include <immintrin.h>

#include <cstring>
#endif

namespace nanovllm::kernels::cpu::gemm {

#if defined(__AVX512BF16__)
namespace {

constexpr int kMaxRows = 6;
// From this many rows on, an int8 tile is widened once into scratch (measured: converting
// in registers for each block is faster up to 16 rows, slower at 64).
constexpr int64_t kWidenRows = 32;

// One k pair of one panel as 16 bfloat16 pairs.
inline __m512bh load_pair(const uint16_t* p) {
  return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p));
}
inline __m512 int8x16_to_float(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline __m512bh load_pair(const int8_t* p) {
  return _mm512_cvtne2ps_pbh(int8x16_to_float(p + 16), int8x16_to_float(p));
}

// x[k], x[k + 1] in every 32-bit lane.
inline __m512bh broadcast_pair(const uint16_t* p) {
  int32_t pair;
  std::memcpy(&pair, p, sizeof(pair));
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(pair));
}

// The last element of an odd-length row, paired with zero.
inline __m512bh broadcast_last(const uint16_t* p) {
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int32_t>(*p)));
}

// The next tile's weights for the k pairs [kp, kp + 1): `bytes` per pair from `next`.
inline void prefetch_pair(const char* next, int64_t kp, int bytes) {
  for (int b = 0; b < bytes; b += 64) _mm_prefetch(next + kp * bytes + b, _MM_HINT_T1);
}

// Rows [m0, m0 + Rows) of tile `t`, whose weights start at `w`; prefetches the next tile
// (`next`, `next_pair_bytes` per k pair) unless `next` is null.
template <int Rows, typename W>
void block(const Problem& pr, int64_t m0, int64_t t, const W* w, const char* next, int next_pair_bytes) {
  __m512 acc[Rows][kTilePanels];
  for (int r = 0; r < Rows; ++r) {
    for (int p = 0; p < kTilePanels; ++p) acc[r][p] = _mm512_setzero_ps();
  }
  const uint16_t* x = pr.x + m0 * pr.ldx;
  const int64_t full_pairs = pr.k / 2;
  for (int64_t kp = 0; kp < full_pairs; ++kp) {
    const W* pair = w + kp * kTilePairElements;
    if (next != nullptr) prefetch_pair(next, kp, next_pair_bytes);
    __m512bh wv[kTilePanels];
    for (int p = 0; p < kTilePanels; ++p) wv[p] = load_pair(pair + p * kPanelPairElements);
    for (int r = 0; r < Rows; ++r) {
      const __m512bh xv = broadcast_pair(x + r * pr.ldx + 2 * kp);
      for (int p = 0; p < kTilePanels; ++p) acc[r][p] = _mm512_dpbf16_ps(acc[r][p], xv, wv[p]);
    }
  }
  if (pr.k % 2 != 0) {
    const W* pair = w + full_pairs * kTilePairElements;
    __m512bh wv[kTilePanels];
    for (int p = 0; p < kTilePanels; ++p) wv[p] = load_pair(pair + p * kPanelPairElements);
    for (int r = 0; r < Rows; ++r) {
      const __m512bh xv = broadcast_last(x + r * pr.ldx + 2 * full_pairs);
      for (int p = 0; p < kTilePanels; ++p) acc[r][p] = _mm512_dpbf16_ps(acc[r][p], xv, wv[p]);
    }
  }

  for (int p = 0; p < kTilePanels; ++p) {
    const int64_t n0 = t * kTileWidth + p * kPanelWidth;
    if (n0 >= pr.n) break;
    const int64_t valid = pr.n - n0 < kPanelWidth ? pr.n - n0 : kPanelWidth;
    const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1);
    const __m512 scale = pr.scales ? _mm512_loadu_ps(pr.scales + n0) : _mm512_set1_ps(1.0f);
    const __m512 bias = pr.bias ? _mm512_maskz_loadu_ps(mask, pr.bias + n0) : _mm512_setzero_ps();
    for (int r = 0; r < Rows; ++r) {
      const __m512 v = _mm512_fmadd_ps(acc[r][p], scale, bias);
      if (pr.out_bf16) {
        uint16_t* out = static_cast<uint16_t*>(pr.out) + (m0 + r) * pr.ldo + n0;
        _mm256_mask_storeu_epi16(out, mask, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
      } else {
        _mm512_mask_storeu_ps(static_cast<float*>(pr.out) + (m0 + r) * pr.ldo + n0, mask, v);
      }
    }
  }
}

// Every row against tile t.
template <typename W>
void tile(const Problem& pr, int64_t t, const W* w, const char* next, int next_pair_bytes) {
  for (int64_t m0 = 0; m0 < pr.m; m0 += kMaxRows) {
    const char* pf = m0 == 0 && pr.m > kMaxRows ? next : nullptr;
    switch (pr.m - m0 < kMaxRows ? pr.m - m0 : kMaxRows) {
      case 1: block<1>(pr, m0, t, w, pf, next_pair_bytes); break;
      case 2: block<2>(pr, m0, t, w, pf, next_pair_bytes); break;
      case 3: block<3>(pr, m0, t, w, pf, next_pair_bytes); break;
      case 4: block<4>(pr, m0, t, w, pf, next_pair_bytes); break;
      case 5: block<5>(pr, m0, t, w, pf, next_pair_bytes); break;
      default: block<6>(pr, m0, t, w, pf, next_pair_bytes); break;
    }
  }
}

void tile_kernel(const Problem& pr, int64_t begin, int64_t end, uint16_t* scratch) {
  const int64_t tile_elements = k_pairs(pr.k) * kTilePairElements;
  const int element_bytes = pr.format == WeightFormat::kBFloat16 ? 2 : 1;
  const int pair_bytes = static_cast<int>(kTilePairElements) * element_bytes;
  const char* weights = static_cast<const char*>(pr.weight);
  for (int64_t t = begin; t < end; ++t) {
    const char* next = t + 1 < end ? weights + (t + 1) * tile_elements * element_bytes : nullptr;
    if (pr.format == WeightFormat::kBFloat16) {
      tile(pr, t, static_cast<const uint16_t*>(pr.weight) + t * tile_elements, next, pair_bytes);
    } else if (pr.m < kWidenRows) {
      tile(pr, t, static_cast<const int8_t*>(pr.weight) + t * tile_elements, next, pair_bytes);
    } else {
      const int8_t* w = static_cast<const int8_t*>(pr.weight) + t * tile_elements;
      for (int64_t i = 0; i < tile_elements; i += kPanelPairElements) {
        _mm512_storeu_si512(scratch + i, reinterpret_cast<__m512i>(load_pair(w + i)));
      }
      tile(pr, t, static_cast<const uint16_t*>(scratch), next, pair_bytes);
    }
  }
}

}  // namespace

TileKernel avx512_tile_kernel() {
  if (!__builtin_cpu_supports("avx512bf16") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl")) {
    return nullptr;
  }
  return tile_kernel;
}

#else

TileKernel avx512_tile_kernel() { return nullptr; }

#endif

}  // namespace nanovllm::kernels::cpu::gemm
