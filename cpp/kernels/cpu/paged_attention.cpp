#include "paged_attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "paged_attention_tile.h"

namespace nanovllm::kernels::cpu {
namespace {

using attention::CacheDtype;
using attention::Page;
using attention::PageKernel;
using attention::Tile;

// Query tokens per tile: enough rows (tokens × query heads per kv head) that each cached
// page, once converted to float, serves many rows; few enough that a short prefill still
// splits across threads.
constexpr int kTileRows = 64;

// The portable page kernel: the same contract as the AVX-512 one, one row at a time.
template <typename T>
void scalar_page_kernel(const Tile& tile, const Page& page) {
  const int head_dim = tile.head_dim;
  const T* keys = static_cast<const T*>(page.key);
  const T* values = static_cast<const T*>(page.value);
  float* scores = tile.scratch;
  for (int r = 0; r < tile.rows; ++r) {
    const int visible = std::min(page.num_keys, tile.positions[r] - page.first_position + 1);
    if (visible <= 0) continue;
    float new_max = tile.max[r];
    for (int j = 0; j < visible; ++j) {
      const T* k = keys + j * page.token_stride;
      float s = 0.0f;
      for (int d = 0; d < head_dim; ++d) {
        s += tile.query[r * head_dim + d] * static_cast<float>(k[d]);
      }
      scores[j] = s;
      new_max = std::max(new_max, s);
    }
    const float shrink = std::exp2(tile.max[r] - new_max);  // 0 while max is -inf
    float* acc = tile.acc + r * head_dim;
    float sum = tile.sum[r] * shrink;
    for (int d = 0; d < head_dim; ++d) acc[d] *= shrink;
    for (int j = 0; j < visible; ++j) {
      const float p = std::exp2(scores[j] - new_max);
      const T* v = values + j * page.token_stride;
      for (int d = 0; d < head_dim; ++d) acc[d] += p * static_cast<float>(v[d]);
      sum += p;
    }
    tile.max[r] = new_max;
    tile.sum[r] = sum;
  }
}

CacheDtype cache_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return CacheDtype::kFloat32;
    case at::kBFloat16: return CacheDtype::kBFloat16;
    case at::kHalf: return CacheDtype::kFloat16;
    default: TORCH_CHECK(false, "paged_attention: unsupported dtype ", type);
  }
}

PageKernel pick_page_kernel(at::ScalarType type, int head_dim, AttentionImpl impl) {
  const CacheDtype dtype = cache_dtype(type);
  if (impl == AttentionImpl::kBest) {
    if (PageKernel kernel = attention::avx512_page_kernel(dtype, head_dim)) return kernel;
  }
  switch (dtype) {
    case CacheDtype::kFloat32: return scalar_page_kernel<float>;
    case CacheDtype::kBFloat16: return scalar_page_kernel<c10::BFloat16>;
    case CacheDtype::kFloat16: return scalar_page_kernel<c10::Half>;
  }
  return nullptr;
}

struct TileSpec {
  int seq;
  int first_token;  // within the sequence's chunk
  int num_tokens;
  int64_t cost;     // (query token, key) pairs
};

struct Problem {
  const char* query;
  int64_t query_token_stride;  // elements
  char* out;
  int64_t out_token_stride;
  const char* key_cache;
  const char* value_cache;
  const int32_t* block_tables;
  int64_t max_blocks;
  const int32_t* query_start_loc;
  const int32_t* context_lens;
  int64_t num_blocks;
  int block_size;
  int num_heads;
  int num_kv_heads;
  int head_dim;
  float query_scale;
  PageKernel kernel;
};

template <typename T>
void prefetch_page(const T* key, const T* value, const Problem& p) {
  const int64_t row_bytes = int64_t{p.head_dim} * static_cast<int64_t>(sizeof(T));
  const int64_t stride = int64_t{p.num_kv_heads} * p.head_dim;
  for (int j = 0; j < p.block_size; ++j) {
    for (int64_t byte = 0; byte < row_bytes; byte += 64) {
      __builtin_prefetch(reinterpret_cast<const char*>(key + j * stride) + byte);
      __builtin_prefetch(reinterpret_cast<const char*>(value + j * stride) + byte);
    }
  }
}

// Attention of one tile (a run of query tokens of one sequence) for one kv head.
template <typename T>
void run_tile(const Problem& p, const TileSpec& spec, int kv_head) {
  thread_local std::vector<float> buffer;
  thread_local std::vector<int32_t> positions;
  thread_local std::vector<uint32_t> query_pairs;

  const int group = p.num_heads / p.num_kv_heads;
  const int rows = spec.num_tokens * group;
  const int lanes = (rows + 15) / 16 * 16;
  const int head_dim = p.head_dim;
  const size_t query_floats = static_cast<size_t>(rows) * head_dim;
  const size_t query_t_floats = static_cast<size_t>(head_dim) * lanes;
  buffer.resize(query_floats + query_t_floats + 2 * lanes + query_floats +
                attention::page_scratch_floats(p.block_size, head_dim, lanes));
  positions.resize(lanes);
  float* query_rows = buffer.data();
  float* query_t = query_rows + query_floats;
  constexpr bool kPairs = std::is_same_v<T, c10::BFloat16>;
  if constexpr (kPairs) query_pairs.resize(query_floats / 2);
  Tile tile{head_dim, rows,    lanes,   query_rows, query_t, positions.data(),
            nullptr,  nullptr, nullptr, nullptr,    nullptr, p.query_scale};
  if constexpr (kPairs) tile.query_pairs = query_pairs.data();
  tile.max = query_t + query_t_floats;
  tile.sum = tile.max + lanes;
  tile.acc = tile.sum + lanes;
  tile.scratch = tile.acc + query_floats;

  const int chunk_start = p.query_start_loc[spec.seq];
  const int chunk_len = p.query_start_loc[spec.seq + 1] - chunk_start;
  const int first_position = p.context_lens[spec.seq] - chunk_len + spec.first_token;
  const T* query = reinterpret_cast<const T*>(p.query);
  for (int i = 0; i < spec.num_tokens; ++i) {
    const int64_t token = chunk_start + spec.first_token + i;
    for (int g = 0; g < group; ++g) {
      const int r = i * group + g;
      const T* q = query + token * p.query_token_stride + (kv_head * group + g) * head_dim;
      for (int d = 0; d < head_dim; ++d) {
        const float value = static_cast<float>(q[d]) * p.query_scale;
        query_rows[r * head_dim + d] = value;
        query_t[d * lanes + r] = value;
      }
      if constexpr (kPairs) std::memcpy(query_pairs.data() + r * head_dim / 2, q, head_dim * sizeof(T));
      positions[r] = first_position + i;
    }
  }
  for (int r = rows; r < lanes; ++r) {
    for (int d = 0; d < head_dim; ++d) query_t[d * lanes + r] = 0.0f;
    positions[r] = std::numeric_limits<int32_t>::max();
  }
  std::fill(tile.max, tile.max + lanes, -std::numeric_limits<float>::infinity());
  std::fill(tile.sum, tile.sum + lanes, 0.0f);
  std::fill(tile.acc, tile.acc + static_cast<size_t>(rows) * head_dim, 0.0f);

  const int last_position = first_position + spec.num_tokens - 1;
  const int32_t* table = p.block_tables + spec.seq * p.max_blocks;
  const int64_t token_stride = int64_t{p.num_kv_heads} * head_dim;
  const int num_pages = last_position / p.block_size + 1;
  const auto page_offset = [&](int b) {
    const int64_t block = table[b];
    TORCH_CHECK(block >= 0 && block < p.num_blocks, "paged_attention: block id ", block,
                " out of range [0, ", p.num_blocks, ")");
    return (block * p.block_size * p.num_kv_heads + kv_head) * head_dim;
  };
  const T* key_cache = reinterpret_cast<const T*>(p.key_cache);
  const T* value_cache = reinterpret_cast<const T*>(p.value_cache);
  int64_t offset = page_offset(0);
  for (int b = 0; b < num_pages; ++b) {
    // Blocks lie anywhere in the cache, beyond the hardware prefetcher's reach: fetch the
    // next page's rows while this one is computed.
    const int64_t next_offset = b + 1 < num_pages ? page_offset(b + 1) : offset;
    if (b + 1 < num_pages) prefetch_page(key_cache + next_offset, value_cache + next_offset, p);
    const Page page{key_cache + offset, value_cache + offset, token_stride,
                    std::min(p.block_size, last_position + 1 - b * p.block_size), b * p.block_size};
    p.kernel(tile, page);
    offset = next_offset;
  }

  T* out = reinterpret_cast<T*>(p.out);
  for (int i = 0; i < spec.num_tokens; ++i) {
    const int64_t token = chunk_start + spec.first_token + i;
    for (int g = 0; g < group; ++g) {
      const int r = i * group + g;
      const float inv_sum = 1.0f / tile.sum[r];
      const float* acc = tile.acc + static_cast<size_t>(r) * head_dim;
      T* o = out + token * p.out_token_stride + (kv_head * group + g) * head_dim;
      for (int d = 0; d < head_dim; ++d) o[d] = static_cast<T>(acc[d] * inv_sum);
    }
  }
}

// Below this many (query row, key) pairs in all, a call runs on the calling thread alone:
// waking the pool costs more than it saves (tens of microseconds of work).
constexpr int64_t kInlinePairs = 8192;

// Runs every (tile, kv head) item. `tiles` come costliest first. Threads claim items one at
// a time rather than taking an even share up front: sequences differ in length, and where
// the cores are shared a descheduled thread then delays only the item it holds while the
// others take the rest.
template <typename T>
void run_all(const Problem& problem, const std::vector<TileSpec>& tiles, int64_t pairs) {
  const int64_t num_items = static_cast<int64_t>(tiles.size()) * problem.num_kv_heads;
  const auto run_item = [&](int64_t item) {
    run_tile<T>(problem, tiles[item / problem.num_kv_heads], static_cast<int>(item % problem.num_kv_heads));
  };
  if (pairs < kInlinePairs || at::get_num_threads() == 1 || num_items == 1) {
    for (int64_t item = 0; item < num_items; ++item) run_item(item);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), num_items), 1, [&](int64_t, int64_t) {
    for (int64_t item = next++; item < num_items; item = next++) run_item(item);
  });
}

void check_heads_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 3 && t.stride(2) == 1 && t.stride(1) == t.size(2), "paged_attention: ",
              name, " must be [tokens, heads, head_dim] with heads contiguous, got sizes ",
              t.sizes(), " strides ", t.strides());
}

}  // namespace

void store_kv(const at::Tensor& key, const at::Tensor& value, const at::Tensor& key_cache,
              const at::Tensor& value_cache, const at::Tensor& slot_mapping) {
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous() && key_cache.dim() == 4 &&
                  key_cache.sizes() == value_cache.sizes(),
              "store_kv: caches must be contiguous [blocks, block_size, kv_heads, head_dim]");
  TORCH_CHECK(key.sizes() == value.sizes() && key.dim() == 3 && key.size(1) == key_cache.size(2) &&
                  key.size(2) == key_cache.size(3),
              "store_kv: key/value ", key.sizes(), " do not match the cache ", key_cache.sizes());
  TORCH_CHECK(key.stride(2) == 1 && key.stride(1) == key.size(2) && value.stride(2) == 1 &&
                  value.stride(1) == value.size(2),
              "store_kv: key/value heads must be contiguous");
  TORCH_CHECK(key.scalar_type() == key_cache.scalar_type() &&
                  value.scalar_type() == value_cache.scalar_type(),
              "store_kv: key/value dtype must match the cache");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.is_contiguous() &&
                  slot_mapping.numel() == key.size(0),
              "store_kv: slot_mapping must be int64 [num_tokens]");

  const int64_t num_slots = key_cache.size(0) * key_cache.size(1);
  const int64_t row_bytes = key.size(1) * key.size(2) * static_cast<int64_t>(key.element_size());
  const int64_t key_stride = key.stride(0) * static_cast<int64_t>(key.element_size());
  const int64_t value_stride = value.stride(0) * static_cast<int64_t>(value.element_size());
  const auto* key_src = static_cast<const char*>(key.data_ptr());
  const auto* value_src = static_cast<const char*>(value.data_ptr());
  auto* key_dst = static_cast<char*>(key_cache.data_ptr());
  auto* value_dst = static_cast<char*>(value_cache.data_ptr());
  const int64_t* slots = slot_mapping.data_ptr<int64_t>();
  // Copies are a few hundred bytes each; only long prefills are worth splitting.
  at::parallel_for(0, key.size(0), 256, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t slot = slots[t];
      if (slot < 0) continue;
      TORCH_CHECK(slot < num_slots, "store_kv: slot ", slot, " out of range [0, ", num_slots, ")");
      std::memcpy(key_dst + slot * row_bytes, key_src + t * key_stride, row_bytes);
      std::memcpy(value_dst + slot * row_bytes, value_src + t * value_stride, row_bytes);
    }
  });
}

void paged_attention(const at::Tensor& out, const at::Tensor& query, const at::Tensor& key_cache,
                     const at::Tensor& value_cache, const at::Tensor& block_tables,
                     const at::Tensor& query_start_loc, const at::Tensor& context_lens,
                     double scale, AttentionImpl impl) {
  check_heads_contiguous(query, "query");
  check_heads_contiguous(out, "out");
  TORCH_CHECK(out.sizes() == query.sizes(), "paged_attention: out ", out.sizes(),
              " and query ", query.sizes(), " differ");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous() && key_cache.dim() == 4 &&
                  key_cache.sizes() == value_cache.sizes(),
              "paged_attention: caches must be contiguous [blocks, block_size, kv_heads, head_dim]");
  TORCH_CHECK(query.scalar_type() == key_cache.scalar_type() &&
                  out.scalar_type() == key_cache.scalar_type() &&
                  value_cache.scalar_type() == key_cache.scalar_type(),
              "paged_attention: query, out and caches must share a dtype");
  TORCH_CHECK(query.size(2) == key_cache.size(3), "paged_attention: head_dim differs");
  const int num_heads = static_cast<int>(query.size(1));
  const int num_kv_heads = static_cast<int>(key_cache.size(2));
  TORCH_CHECK(num_heads % num_kv_heads == 0, "paged_attention: ", num_heads,
              " query heads are not a multiple of ", num_kv_heads, " kv heads");
  const int64_t num_seqs = context_lens.numel();
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && block_tables.is_contiguous() &&
                  block_tables.dim() == 2 && block_tables.size(0) == num_seqs,
              "paged_attention: block_tables must be int32 [num_seqs, max_blocks]");
  TORCH_CHECK(query_start_loc.scalar_type() == at::kInt && query_start_loc.is_contiguous() &&
                  query_start_loc.numel() == num_seqs + 1 &&
                  context_lens.scalar_type() == at::kInt && context_lens.is_contiguous(),
              "paged_attention: query_start_loc must be int32 [num_seqs + 1], context_lens int32 "
              "[num_seqs]");

  Problem problem{};
  problem.query = static_cast<const char*>(query.data_ptr());
  problem.query_token_stride = query.stride(0);
  problem.out = static_cast<char*>(out.data_ptr());
  problem.out_token_stride = out.stride(0);
  problem.key_cache = static_cast<const char*>(key_cache.data_ptr());
  problem.value_cache = static_cast<const char*>(value_cache.data_ptr());
  problem.block_tables = block_tables.data_ptr<int32_t>();
  problem.max_blocks = block_tables.size(1);
  problem.query_start_loc = query_start_loc.data_ptr<int32_t>();
  problem.context_lens = context_lens.data_ptr<int32_t>();
  problem.num_blocks = key_cache.size(0);
  problem.block_size = static_cast<int>(key_cache.size(1));
  problem.num_heads = num_heads;
  problem.num_kv_heads = num_kv_heads;
  problem.head_dim = static_cast<int>(query.size(2));
  // Scores are taken in base 2: exp(x · scale) = exp2(x · scale · log2 e).
  problem.query_scale = static_cast<float>(scale * 1.4426950408889634);
  problem.kernel = pick_page_kernel(query.scalar_type(), problem.head_dim, impl);

  const int group = num_heads / num_kv_heads;
  const int tile_tokens = std::max(1, kTileRows / group);
  std::vector<TileSpec> tiles;
  int64_t pairs = 0;
  for (int s = 0; s < num_seqs; ++s) {
    const int chunk_len = problem.query_start_loc[s + 1] - problem.query_start_loc[s];
    const int context_len = problem.context_lens[s];
    TORCH_CHECK(chunk_len >= 0 && context_len >= chunk_len &&
                    (context_len + problem.block_size - 1) / problem.block_size <= problem.max_blocks,
                "paged_attention: sequence ", s, " has ", chunk_len, " queries, context ",
                context_len, " and ", problem.max_blocks, " block table entries");
    for (int t = 0; t < chunk_len; t += tile_tokens) {
      const int num_tokens = std::min(tile_tokens, chunk_len - t);
      // A tile reads its sequence's keys up to its last query's position.
      const int64_t keys = context_len - chunk_len + t + num_tokens;
      tiles.push_back({s, t, num_tokens, keys * num_tokens});
      pairs += keys * num_tokens * num_heads;
    }
  }
  // Costliest first, so that the last items claimed are short ones.
  std::stable_sort(tiles.begin(), tiles.end(),
                   [](const TileSpec& a, const TileSpec& b) { return a.cost > b.cost; });

  switch (cache_dtype(query.scalar_type())) {
    case CacheDtype::kFloat32: run_all<float>(problem, tiles, pairs); break;
    case CacheDtype::kBFloat16: run_all<c10::BFloat16>(problem, tiles, pairs); break;
    case CacheDtype::kFloat16: run_all<c10::Half>(problem, tiles, pairs); break;
  }
}

}  // namespace nanovllm::kernels::cpu
