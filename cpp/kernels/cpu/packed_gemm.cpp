#include "packed_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include "packed_gemm_kernel.h"

namespace nanovllm::kernels::cpu {
namespace {

using gemm::kTilePairElements;
using gemm::kTileWidth;

int64_t num_tiles(int64_t n) { return (n + kTileWidth - 1) / kTileWidth; }

// Where element j of output channel c sits in the packed data (k pairs per tile).
int64_t element_offset(int64_t c, int64_t j, int64_t pairs, bool int8) {
  const int64_t e = 2 * (c % kTileWidth) + j % 2;  // within the tile's k pair
  return (c / kTileWidth * pairs + j / 2) * kTilePairElements + (int8 ? gemm::int8_pair_offset(e) : e);
}

float bf16_to_float(uint16_t bits) {
  const uint32_t widened = uint32_t{bits} << 16;
  float value;
  std::memcpy(&value, &widened, sizeof(value));
  return value;
}

uint16_t float_to_bf16(float value) {  // round to nearest even, as the AVX-512 kernel does
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays NaN
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

float weight_value(uint16_t bits) { return bf16_to_float(bits); }
float weight_value(int8_t byte) { return gemm::int8_decode(static_cast<uint8_t>(byte)); }

// Writes W [n, k] (row-major) into packed.data's tiles: as bfloat16, or as int8 with
// packed.scales[channel] = max|w| / 127. Padding stays as allocated (zero).
template <typename T>
void fill_tiles(const T* w, int64_t n, int64_t k, const PackedWeight& packed) {
  const int64_t pairs = gemm::k_pairs(k);
  const bool int8 = packed.data.scalar_type() == at::kChar;
  at::parallel_for(0, num_tiles(n), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> row(k);
    for (int64_t channel = begin * kTileWidth; channel < std::min(n, end * kTileWidth); ++channel) {
      for (int64_t j = 0; j < k; ++j) row[j] = static_cast<float>(w[channel * k + j]);
      if (int8) {
        float amax = 0.0f;
        for (const float v : row) amax = std::max(amax, std::abs(v));
        const float scale = amax / 127.0f;
        packed.scales.data_ptr<float>()[channel] = scale;
        if (scale == 0.0f) continue;  // an all-zero channel stays zero
        int8_t* dst = packed.data.data_ptr<int8_t>();
        for (int64_t j = 0; j < k; ++j) {
          const float q = std::clamp(std::nearbyint(row[j] / scale), -127.0f, 127.0f);
          dst[element_offset(channel, j, pairs, true)] =
              static_cast<int8_t>(gemm::int8_encode(static_cast<int>(q)));
        }
      } else {
        uint16_t* dst = reinterpret_cast<uint16_t*>(packed.data.data_ptr());
        for (int64_t j = 0; j < k; ++j) dst[element_offset(channel, j, pairs, false)] = float_to_bf16(row[j]);
      }
    }
  });
}

PackedWeight pack(const at::Tensor& weight, bool int8) {
  TORCH_CHECK(weight.dim() == 2 && weight.is_floating_point(), "packed weight: expected a 2-D float matrix");
  const at::Tensor w = weight.contiguous();
  const int64_t n = w.size(0), k = w.size(1);
  PackedWeight packed;
  packed.data = at::zeros({num_tiles(n), gemm::k_pairs(k), kTileWidth, 2},
                          w.options().dtype(int8 ? at::kChar : at::kBFloat16));
  if (int8) packed.scales = at::zeros({num_tiles(n) * kTileWidth}, w.options().dtype(at::kFloat));
  packed.out_features = n;
  packed.in_features = k;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, w.scalar_type(), "pack",
                                  [&] { fill_tiles(w.data_ptr<scalar_t>(), n, k, packed); });
  return packed;
}

// The portable loops: float32 sums in k order, as the AVX-512 kernel's (which adds a k pair
// at a time).
template <typename W>
void scalar_tiles(const gemm::Problem& pr, int64_t begin, int64_t end) {
  const W* weight = static_cast<const W*>(pr.weight);
  const int64_t pairs = gemm::k_pairs(pr.k);
  const bool int8 = pr.format == gemm::WeightFormat::kInt8;
  for (int64_t t = begin; t < end; ++t) {
    const int64_t n0 = t * kTileWidth;
    const int64_t valid = std::min<int64_t>(kTileWidth, pr.n - n0);
    for (int64_t m = 0; m < pr.m; ++m) {
      float acc[kTileWidth] = {};
      for (int64_t k = 0; k < pr.k; ++k) {
        const float xv = bf16_to_float(pr.x[m * pr.ldx + k]);
        for (int c = 0; c < kTileWidth; ++c) {
          acc[c] += xv * weight_value(weight[element_offset(n0 + c, k, pairs, int8)]);
        }
      }
      for (int64_t c = 0; c < valid; ++c) {
        float v = acc[c] * (pr.scales ? pr.scales[n0 + c] : 1.0f);
        if (pr.bias) v += pr.bias[n0 + c];
        if (pr.out_bf16) {
          static_cast<uint16_t*>(pr.out)[m * pr.ldo + n0 + c] = float_to_bf16(v);
        } else {
          static_cast<float*>(pr.out)[m * pr.ldo + n0 + c] = v;
        }
      }
    }
  }
}

void scalar_kernel(const gemm::Problem& pr, int64_t begin, int64_t end, uint16_t*) {
  if (pr.format == gemm::WeightFormat::kInt8) {
    scalar_tiles<int8_t>(pr, begin, end);
  } else {
    scalar_tiles<uint16_t>(pr, begin, end);
  }
}

// Rows of the tiled layout back to [count, k], times the channel's scale for int8.
template <typename T, typename W>
void copy_rows(T* out, const W* data, const float* scales, const int64_t* ids, int64_t count, int64_t k) {
  const int64_t pairs = gemm::k_pairs(k);
  constexpr bool int8 = std::is_same_v<W, int8_t>;
  at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float scale = scales ? scales[ids[i]] : 1.0f;
      for (int64_t j = 0; j < k; ++j) {
        out[i * k + j] = static_cast<T>(scale * weight_value(data[element_offset(ids[i], j, pairs, int8)]));
      }
    }
  });
}

gemm::TileKernel best_kernel() {
  static const gemm::TileKernel kernel = gemm::avx512_tile_kernel();
  return kernel;
}

}  // namespace

PackedWeight pack_bfloat16(const at::Tensor& weight) { return pack(weight, false); }

PackedWeight quantize_int8(const at::Tensor& weight) { return pack(weight, true); }

bool packed_gemm_accelerated() { return best_kernel() != nullptr; }

void packed_linear(const at::Tensor& out, const at::Tensor& x, const PackedWeight& weight,
                   const at::Tensor& bias, GemmImpl impl) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16 && x.stride(1) == 1 &&
                  x.size(1) == weight.in_features,
              "packed_linear: x must be bfloat16 [rows, in_features] with unit column stride");
  TORCH_CHECK(out.is_contiguous() && out.size(0) == x.size(0) && out.size(1) == weight.out_features &&
                  (out.scalar_type() == at::kBFloat16 || out.scalar_type() == at::kFloat),
              "packed_linear: out must be contiguous [rows, out_features], bfloat16 or float32");
  TORCH_CHECK(!bias.defined() || (bias.scalar_type() == at::kFloat && bias.is_contiguous() &&
                                  bias.numel() == weight.out_features),
              "packed_linear: bias must be float32 [out_features]");
  if (x.size(0) == 0) return;
  const bool int8 = weight.data.scalar_type() == at::kChar;
  const gemm::Problem problem{
      reinterpret_cast<const uint16_t*>(x.data_ptr()),
      x.stride(0),
      x.size(0),
      weight.in_features,
      weight.out_features,
      int8 ? gemm::WeightFormat::kInt8 : gemm::WeightFormat::kBFloat16,
      weight.data.data_ptr(),
      int8 ? weight.scales.data_ptr<float>() : nullptr,
      bias.defined() ? bias.data_ptr<float>() : nullptr,
      out.data_ptr(),
      out.stride(0),
      out.scalar_type() == at::kBFloat16};
  const gemm::TileKernel fast = impl == GemmImpl::kBest ? best_kernel() : nullptr;
  const gemm::TileKernel kernel = fast ? fast : scalar_kernel;
  at::parallel_for(0, num_tiles(problem.n), 1, [&](int64_t begin, int64_t end) {
    // Kept across calls; only touched when many rows share an int8 tile.
    thread_local std::vector<uint16_t> scratch;
    if (scratch.size() < static_cast<size_t>(gemm::scratch_elements(problem.k))) {
      scratch.resize(gemm::scratch_elements(problem.k));
    }
    kernel(problem, begin, end, scratch.data());
  });
}

void packed_rows(const at::Tensor& out, const PackedWeight& weight, const at::Tensor& indices) {
  const at::Tensor ids = indices.to(at::kLong).contiguous();
  TORCH_CHECK(out.is_contiguous() && out.dim() == 2 && out.size(0) == ids.numel() &&
                  out.size(1) == weight.in_features,
              "packed_rows: out must be contiguous [indices, in_features]");
  const int64_t* id = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    TORCH_CHECK(id[i] >= 0 && id[i] < weight.out_features, "packed_rows: index ", id[i],
                " out of range for ", weight.out_features, " rows");
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out.scalar_type(), "packed_rows", [&] {
    if (weight.data.scalar_type() == at::kChar) {
      copy_rows<scalar_t>(out.data_ptr<scalar_t>(), weight.data.data_ptr<int8_t>(),
                          weight.scales.data_ptr<float>(), id, ids.numel(), weight.in_features);
    } else {
      copy_rows<scalar_t>(out.data_ptr<scalar_t>(), reinterpret_cast<const uint16_t*>(weight.data.data_ptr()),
                          nullptr, id, ids.numel(), weight.in_features);
    }
  });
}

}  // namespace nanovllm::kernels::cpu
