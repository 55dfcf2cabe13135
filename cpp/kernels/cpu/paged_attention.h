// CPU paged attention: K/V live in fixed-size blocks of a cache; a sequence's block table
// says which blocks hold its positions. One kernel serves prefill chunks and decode.
#pragma once

#include <ATen/core/Tensor.h>

namespace nanovllm::kernels::cpu {

// Writes each token's key and value into the caches at its slot (block * block_size +
// offset). Tokens whose slot is -1 are skipped.
//   key, value:             [num_tokens, num_kv_heads, head_dim], heads contiguous
//                           (the token stride may be anything, e.g. a view of a fused QKV)
//   key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_dim], contiguous
//   slot_mapping:           int64 [num_tokens]
void store_kv(const at::Tensor& key, const at::Tensor& value, const at::Tensor& key_cache,
              const at::Tensor& value_cache, const at::Tensor& slot_mapping);

// Which inner loops to run: the fastest the CPU supports, or the portable scalar ones
// (kept selectable so tests can check both).
enum class AttentionImpl { kBest, kScalar };

// Causal attention of a batch of query chunks against the paged cache (which already
// holds the chunks' own K/V). Sequence i owns query rows
// [query_start_loc[i], query_start_loc[i+1]); they are its last positions up to
// context_lens[i], so a query at position p attends to positions 0..p of its sequence.
// Decode is the one-row case. K/V are read through the block table in place.
//   out:             [num_tokens, num_heads, head_dim], heads contiguous
//   query:           [num_tokens, num_heads, head_dim], heads contiguous, same dtype as
//                    the caches (float32, bfloat16 or float16)
//   key/value_cache: [num_blocks, block_size, num_kv_heads, head_dim], contiguous;
//                    num_heads must be a multiple of num_kv_heads (GQA)
//   block_tables:    int32 [num_seqs, max_blocks], contiguous
//   query_start_loc: int32 [num_seqs + 1];  context_lens: int32 [num_seqs]
void paged_attention(const at::Tensor& out, const at::Tensor& query, const at::Tensor& key_cache,
                     const at::Tensor& value_cache, const at::Tensor& block_tables,
                     const at::Tensor& query_start_loc, const at::Tensor& context_lens,
                     double scale, AttentionImpl impl = AttentionImpl::kBest);

}  // namespace nanovllm::kernels::cpu
