// AVX-512 BF16 kernel of the packed-weight GEMM. The build compiles this file alone with
// -mavx512f -mavx512bw -mavx512vl -mavx512vbmi -mavx512bf16 (see cpp/model/CMakeLists.txt); the
// kernel is only handed out when the CPU reports all of them.
//
// A block is up to 6 rows × one tile (4 panels): 24 float accumulators, each a chain of
// vdpbf16ps over the k pairs in order. Every output element therefore sums its products
// in the same order whatever the number of rows, so a row's result does not depend on the
// batch it is in.
//
// int8 weights are widened to bfloat16 in registers (exact: |q| <= 127 fits bfloat16's
// 8-bit significand): the magnitude's 7 bits index two 128-entry byte tables (vpermi2b)
// that give the high and low bytes of its bfloat16, the sign bit is or-ed into the high
// byte, and two in-lane byte interleaves put 64 widened weights in panel order (the int8
// layout of packed_gemm_kernel.h). Five instructions per 64 weights, where converting
// through int32 and float32 took ten: at one row, decode, the widening is what limits the
// int8 product once memory delivers ~90 GB/s. With many rows a tile is widened once into
// scratch and reused by every row block.
//
// One row block (decode) streams the weights at memory speed with the hardware prefetcher
// alone. With several blocks per tile the first one runs at compute speed, and it also
// pulls the next tile into L2, so that the memory reads hide behind this tile's arithmetic.
#include "packed_gemm_kernel.h"

#if defined(__AVX512BF16__) && defined(__AVX512VBMI__)
#include <immintrin.h>

#include <cstring>
#endif

namespace nanovllm::kernels::cpu::gemm {

#if defined(__AVX512BF16__) && defined(__AVX512VBMI__)
namespace {

constexpr int kMaxRows = 6;
// From this many rows on, an int8 tile is widened once into scratch (measured: converting
// in registers for each block is faster up to 16 rows, slower at 64).
constexpr int64_t kWidenRows = 32;

// The high and low bytes of the bfloat16 of every magnitude 0..127.
struct MagnitudeTables {
  alignas(64) uint8_t high[128];
  alignas(64) uint8_t low[128];
};
constexpr MagnitudeTables magnitude_tables() {
  MagnitudeTables t{};
  for (int m = 1; m < 128; ++m) {
    int e = 0;  // floor(log2(m))
    while ((m >> (e + 1)) != 0) ++e;
    const int bits = ((127 + e) << 7) | ((m << (7 - e)) & 0x7f);
    t.high[m] = static_cast<uint8_t>(bits >> 8);
    t.low[m] = static_cast<uint8_t>(bits & 0xff);
  }
  return t;
}
constexpr MagnitudeTables kMagnitudeTables = magnitude_tables();

// Widens int8 weights (sign and magnitude bytes) to bfloat16, 64 at a time.
struct Int8Widener {
  __m512i high0 = _mm512_load_si512(kMagnitudeTables.high);
  __m512i high1 = _mm512_load_si512(kMagnitudeTables.high + 64);
  __m512i low0 = _mm512_load_si512(kMagnitudeTables.low);
  __m512i low1 = _mm512_load_si512(kMagnitudeTables.low + 64);
  __m512i sign = _mm512_set1_epi8(static_cast<char>(0x80));

  // 64 bytes (panels 2h and 2h + 1 of one k pair) -> the two panels' bfloat16 pairs.
  void widen(const int8_t* p, __m512bh& first, __m512bh& second) const {
    const __m512i bytes = _mm512_loadu_si512(p);
    // vpermi2b reads the low 7 bits of each index byte: the magnitude.
    __m512i high = _mm512_permutex2var_epi8(high0, bytes, high1);
    const __m512i low = _mm512_permutex2var_epi8(low0, bytes, low1);
    high = _mm512_ternarylogic_epi32(high, bytes, sign, 0xF8);  // high | (bytes & 0x80)
    first = reinterpret_cast<__m512bh>(_mm512_unpacklo_epi8(low, high));
    second = reinterpret_cast<__m512bh>(_mm512_unpackhi_epi8(low, high));
  }
};

// The four panels of one k pair of a tile, as 16 bfloat16 pairs each.
inline void load_tile_pair(const uint16_t* pair, const Int8Widener&, __m512bh (&wv)[kTilePanels]) {
  for (int p = 0; p < kTilePanels; ++p) {
    wv[p] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(pair + p * kPanelPairElements));
  }
}
inline void load_tile_pair(const int8_t* pair, const Int8Widener& widener, __m512bh (&wv)[kTilePanels]) {
  widener.widen(pair, wv[0], wv[1]);
  widener.widen(pair + 64, wv[2], wv[3]);
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
  const Int8Widener widener;
  for (int64_t kp = 0; kp < full_pairs; ++kp) {
    const W* pair = w + kp * kTilePairElements;
    if (next != nullptr) prefetch_pair(next, kp, next_pair_bytes);
    __m512bh wv[kTilePanels];
    load_tile_pair(pair, widener, wv);
    for (int r = 0; r < Rows; ++r) {
      const __m512bh xv = broadcast_pair(x + r * pr.ldx + 2 * kp);
      for (int p = 0; p < kTilePanels; ++p) acc[r][p] = _mm512_dpbf16_ps(acc[r][p], xv, wv[p]);
    }
  }
  if (pr.k % 2 != 0) {
    const W* pair = w + full_pairs * kTilePairElements;
    __m512bh wv[kTilePanels];
    load_tile_pair(pair, widener, wv);
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
      const Int8Widener widener;
      for (int64_t i = 0; i < tile_elements; i += kTilePairElements) {
        __m512bh wv[kTilePanels];
        load_tile_pair(w + i, widener, wv);
        for (int p = 0; p < kTilePanels; ++p) {
          _mm512_storeu_si512(scratch + i + p * kPanelPairElements, reinterpret_cast<__m512i>(wv[p]));
        }
      }
      tile(pr, t, static_cast<const uint16_t*>(scratch), next, pair_bytes);
    }
  }
}

}  // namespace

TileKernel avx512_tile_kernel() {
  if (!__builtin_cpu_supports("avx512bf16") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512vbmi")) {
    return nullptr;
  }
  return tile_kernel;
}

#else

TileKernel avx512_tile_kernel() { return nullptr; }

#endif

}  // namespace nanovllm::kernels::cpu::gemm
