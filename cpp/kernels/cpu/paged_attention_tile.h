// The inner loop of CPU paged attention: one page of keys/values folded into the online
// softmax of one tile of query rows. Shared by the portable unit (paged_attention.cpp) and
// the AVX-512 one (paged_attention_avx512.cpp).
//
// Deliberately free of ATen and of standard-library templates: the AVX-512 unit is
// compiled with -mavx512f, and an inline function it instantiated could be the copy the
// linker keeps for the whole library, then run on a CPU without AVX-512.
#pragma once

#include <cstdint>

namespace nanovllm::kernels::cpu::attention {

enum class CacheDtype { kFloat32, kBFloat16, kFloat16 };

// Rows are (query token, query head) pairs that share one kv head. Arrays indexed by row
// are padded to a multiple of 16 so the AVX-512 kernel keeps 16 rows in a vector's lanes.
struct Tile {
  int head_dim;
  int rows;
  int padded_rows;
  const float* query;        // [rows][head_dim]: queries scaled by softmax scale * log2(e),
                             // so that exp2 gives the softmax
  const float* query_t;      // [head_dim][padded_rows]: the same, transposed, zero-padded
  const int32_t* positions;  // [padded_rows]: a row sees keys at positions <= its own;
                             // padding rows carry INT32_MAX and see everything
  float* max;                // [padded_rows]: running max of the scores
  float* sum;                // [padded_rows]: running sum of exp2(score - max)
  float* acc;                // [rows][head_dim]: running sum of exp2(score - max) * value
  float* scratch;            // page_scratch_floats(block_size, head_dim, padded_rows)
  // bfloat16 caches only (else null): [rows][head_dim / 2], each row's query as it came,
  // unscaled, two elements per word; score_scale then turns their products into scores.
  const uint32_t* query_pairs;
  float score_scale;
};

// A run of consecutive keys/values of one kv head inside one cache block.
struct Page {
  const void* key;        // the first token's key
  const void* value;      // the first token's value
  int64_t token_stride;   // elements from one token to the next (num_kv_heads * head_dim)
  int num_keys;           // tokens to read, at most block_size
  int first_position;     // sequence position of the first token
};

using PageKernel = void (*)(const Tile& tile, const Page& page);

// Scratch one page needs: keys as float (padded to a multiple of 16 keys), values as float,
// the scores/probabilities [keys][padded_rows], and a rescale factor per row.
inline int64_t page_scratch_floats(int block_size, int head_dim, int padded_rows) {
  const int64_t padded_keys = (block_size + 15) / 16 * 16;
  return padded_keys * head_dim + int64_t{block_size} * head_dim + padded_keys * padded_rows +
         padded_rows;
}

// The AVX-512 kernel for this cache dtype, or nullptr when the CPU (or the build) lacks
// AVX-512F or head_dim is not a multiple of 16.
PageKernel avx512_page_kernel(CacheDtype dtype, int head_dim);

}  // namespace nanovllm::kernels::cpu::attention
