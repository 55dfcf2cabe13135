// The inner loops of the packed-weight GEMM (packed_gemm.h): one slice of output panels of
// out = x·Wᵀ·diag(scales) + bias. Shared by the portable unit (packed_gemm.cpp) and the
// AVX-512 one (packed_gemm_avx512.cpp).
//
// Deliberately free of ATen and of standard-library templates: the AVX-512 unit is
// compiled with AVX-512 flags, and an inline function it instantiated could be the copy the
// linker keeps for the whole library, then run on a CPU without AVX-512.
#pragma once

#include <cstdint>

namespace nanovllm::kernels::cpu::gemm {

// Output channels per panel: one 512-bit vector of float accumulators.
constexpr int kPanelWidth = 16;
// Panels per tile, the unit of work: 64 channels.
constexpr int kTilePanels = 4;
constexpr int kTileWidth = kTilePanels * kPanelWidth;

enum class WeightFormat { kBFloat16, kInt8 };

// Weights are stored [tiles][ceil(k / 2)][64][2]: for each k pair, the tile's 64 channels
// side by side, each with two consecutive k — four panels of the operand layout of the bf16
// pair dot product (vdpbf16ps). A run of tiles is then one sequential stream, which is
// what the hardware prefetcher follows best. Padding (channels past n, the k past an odd
// k) holds zeros.
struct Problem {
  const uint16_t* x;    // bfloat16 bits, [m][ldx], the first k columns used
  int64_t ldx;
  int64_t m;
  int64_t k;
  int64_t n;
  WeightFormat format;
  const void* weight;   // uint16_t (bfloat16 bits) or int8_t, the packed layout above
  const float* scales;  // [tiles * 64] per-channel factors, or null (bfloat16 weights)
  const float* bias;    // [n], or null
  void* out;            // [m][ldo]: bfloat16 bits when out_bf16, else float
  int64_t ldo;
  bool out_bf16;
};

// Elements of one k pair of one panel, and of one tile.
constexpr int64_t kPanelPairElements = 2 * kPanelWidth;
constexpr int64_t kTilePairElements = 2 * kTileWidth;

constexpr int64_t k_pairs(int64_t k) { return (k + 1) / 2; }

// bfloat16 scratch one tile may use (int8 weights widened once for many rows).
constexpr int64_t scratch_elements(int64_t k) { return k_pairs(k) * kTilePairElements; }

// Computes output tiles [begin, end) for every row of x. `scratch` holds
// scratch_elements(k) bfloat16.
using TileKernel = void (*)(const Problem& problem, int64_t begin, int64_t end, uint16_t* scratch);

// The AVX-512 BF16 kernel, or nullptr when the CPU (or the build) lacks AVX-512 BF16.
TileKernel avx512_tile_kernel();

}  // namespace nanovllm::kernels::cpu::gemm
