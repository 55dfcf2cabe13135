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
//
// int8 weights keep that order per k pair (128 bytes), with two changes that let the
// AVX-512 kernel widen 64 of them to bfloat16 in five instructions (two byte-table
// lookups for the high and low bytes of the bfloat16, the sign, two byte interleaves):
//  - each byte is sign and magnitude, not two's complement: 0x80 | |q| for q < 0;
//  - within each 64-byte half (panels 2h and 2h + 1), the bytes are in the order that the
//    in-lane interleave of the two lookups puts back in panel order (int8_pair_offset).
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

// Where element `e` (0..127: channel e / 2, k parity e % 2) of one k pair of a tile sits
// in int8 layout, in bytes (in the bfloat16 layout it sits at e).
constexpr int64_t int8_pair_offset(int64_t e) {
  const int64_t panel = e / kPanelPairElements, word = e % kPanelPairElements;
  // Interleaving the low 8 bytes of each 16-byte lane of two vectors gives the first panel
  // of the half, interleaving the high 8 bytes the second.
  return (panel / 2) * 64 + (word / 8) * 16 + (panel % 2) * 8 + word % 8;
}

// The int8 byte of q in [-127, 127], and back.
constexpr uint8_t int8_encode(int q) {
  return static_cast<uint8_t>(q < 0 ? 0x80 | -q : q);
}
constexpr int int8_decode(uint8_t byte) { return byte & 0x80 ? -(byte & 0x7f) : byte; }

// bfloat16 scratch one tile may use (int8 weights widened once for many rows).
constexpr int64_t scratch_elements(int64_t k) { return k_pairs(k) * kTilePairElements; }

// Computes output tiles [begin, end) for every row of x. `scratch` holds
// scratch_elements(k) bfloat16.
using TileKernel = void (*)(const Problem& problem, int64_t begin, int64_t end, uint16_t* scratch);

// The AVX-512 BF16 kernel, or nullptr when the CPU (or the build) lacks AVX-512 BF16.
TileKernel avx512_tile_kernel();

}  // namespace nanovllm::kernels::cpu::gemm
