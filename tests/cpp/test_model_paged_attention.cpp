// The CPU paged-attention kernels against a plain reference: each sequence's K/V gathered
// from the cache through its block table, then causal softmax attention in float64.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "cpu/paged_attention.h"

namespace nanovllm::kernels::cpu {
namespace {

struct Shape {
  int head_dim;
  int num_heads;
  int num_kv_heads;
  int block_size;
};

// One sequence of the batch: `queries` new tokens ending at position `context` - 1.
struct Chunk {
  int queries;
  int context;
};

struct Case {
  Shape shape;
  at::ScalarType dtype;
  AttentionImpl impl;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  std::ostringstream name;
  name << "d" << c.shape.head_dim << "_h" << c.shape.num_heads << "_kv" << c.shape.num_kv_heads
       << "_bs" << c.shape.block_size << "_"
       << (c.dtype == at::kFloat ? "f32" : c.dtype == at::kBFloat16 ? "bf16" : "f16")
       << (c.impl == AttentionImpl::kBest ? "_best" : "_scalar");
  return name.str();
}

class PagedAttention : public ::testing::TestWithParam<Case> {};

TEST_P(PagedAttention, MatchesReferenceForPrefillChunksAndDecode) {
  const auto [shape, dtype, impl] = GetParam();
  at::manual_seed(0);
  // A fresh prefill, a chunk after a cached prefix, decodes short and long, a 1-token
  // prompt, and a chunk ending exactly on a block boundary.
  const std::vector<Chunk> chunks = {{37, 37}, {20, 70}, {1, 129}, {1, 1}, {3, 3}, {16, 48}};
  const int num_seqs = static_cast<int>(chunks.size());
  int max_blocks = 0;
  int total_blocks = 0;
  for (const Chunk& c : chunks) {
    const int blocks = (c.context + shape.block_size - 1) / shape.block_size;
    max_blocks = std::max(max_blocks, blocks);
    total_blocks += blocks;
  }
  // Blocks handed out in a shuffled order, tables padded with -1 past each context.
  const at::Tensor order = at::randperm(total_blocks + 5, at::kInt);
  at::Tensor block_tables = at::full({num_seqs, max_blocks}, -1, at::kInt);
  std::vector<int32_t> query_start{0};
  std::vector<int32_t> context_lens;
  int next = 0;
  for (int s = 0; s < num_seqs; ++s) {
    const int blocks = (chunks[s].context + shape.block_size - 1) / shape.block_size;
    for (int b = 0; b < blocks; ++b) block_tables[s][b] = order[next++];
    query_start.push_back(query_start.back() + chunks[s].queries);
    context_lens.push_back(chunks[s].context);
  }
  const int num_blocks = total_blocks + 5;
  const at::Tensor key_cache =
      at::randn({num_blocks, shape.block_size, shape.num_kv_heads, shape.head_dim}).to(dtype);
  const at::Tensor value_cache = at::randn_like(key_cache, at::kFloat).to(dtype);
  const int num_tokens = query_start.back();
  // Queries as a strided view, the way the model passes a slice of its fused QKV.
  const at::Tensor fused = at::randn({num_tokens, shape.num_heads + 3, shape.head_dim}).to(dtype);
  const at::Tensor query = fused.narrow(1, 1, shape.num_heads);
  const at::Tensor out = at::empty({num_tokens, shape.num_heads, shape.head_dim}, dtype);
  const double scale = 1.0 / std::sqrt(static_cast<double>(shape.head_dim));

  paged_attention(out, query, key_cache, value_cache, block_tables,
                  at::tensor(query_start, at::kInt), at::tensor(context_lens, at::kInt), scale, impl);

  const int group = shape.num_heads / shape.num_kv_heads;
  const double tolerance = dtype == at::kFloat ? 1e-5 : dtype == at::kHalf ? 4e-3 : 2e-2;
  for (int s = 0; s < num_seqs; ++s) {
    const Chunk& c = chunks[s];
    // Gather positions 0..context-1 through the block table.
    std::vector<at::Tensor> keys;
    std::vector<at::Tensor> values;
    for (int pos = 0; pos < c.context; ++pos) {
      const int64_t block = block_tables[s][pos / shape.block_size].item<int>();
      keys.push_back(key_cache[block][pos % shape.block_size]);
      values.push_back(value_cache[block][pos % shape.block_size]);
    }
    const at::Tensor k = at::stack(keys).to(at::kDouble).repeat_interleave(group, 1);  // [ctx, H, D]
    const at::Tensor v = at::stack(values).to(at::kDouble).repeat_interleave(group, 1);
    const at::Tensor q = query.narrow(0, query_start[s], c.queries).to(at::kDouble);  // [n, H, D]
    at::Tensor scores = at::einsum("qhd,khd->hqk", {q, k}) * scale;
    const at::Tensor query_pos = at::arange(c.context - c.queries, c.context).unsqueeze(1);
    const at::Tensor key_pos = at::arange(c.context).unsqueeze(0);
    scores = scores.masked_fill(key_pos > query_pos, -std::numeric_limits<double>::infinity());
    const at::Tensor expected = at::einsum("hqk,khd->qhd", {scores.softmax(-1), v});
    const at::Tensor got = out.narrow(0, query_start[s], c.queries).to(at::kDouble);
    EXPECT_LE((got - expected).abs().max().item<double>(), tolerance)
        << "sequence " << s << " (" << c.queries << " queries, context " << c.context << ")";
  }
}

std::vector<Case> cases() {
  const std::vector<Shape> shapes = {
      {64, 9, 3, 16},   // SmolLM2's heads
      {128, 4, 2, 5},   // Qwen3's head_dim, a block size that is no multiple of 8
      {32, 2, 2, 1},    // one token per block, no GQA
      {64, 14, 2, 32},  // Qwen2.5's group of 7: rows spill past one vector
      {24, 4, 1, 7},    // head_dim no multiple of 16: the portable loop even when "best"
  };
  std::vector<Case> all;
  for (const Shape& shape : shapes) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      for (AttentionImpl impl : {AttentionImpl::kBest, AttentionImpl::kScalar}) all.push_back({shape, dtype, impl});
    }
  }
  return all;
}

INSTANTIATE_TEST_SUITE_P(Shapes, PagedAttention, ::testing::ValuesIn(cases()), case_name);

TEST(StoreKV, WritesEachTokenToItsSlotAndSkipsMinusOne) {
  const at::Tensor key_cache = at::zeros({4, 3, 2, 8});
  const at::Tensor value_cache = at::zeros({4, 3, 2, 8});
  // Keys as a strided view of a wider row, as when they are a slice of the fused QKV.
  const at::Tensor fused = at::randn({3, 6, 8});
  const at::Tensor key = fused.narrow(1, 2, 2);
  const at::Tensor value = fused.narrow(1, 4, 2);
  store_kv(key, value, key_cache, value_cache, at::tensor({7, -1, 0}, at::kLong));

  EXPECT_TRUE(at::equal(key_cache[2][1], key[0]));  // slot 7 = block 2, offset 1
  EXPECT_TRUE(at::equal(value_cache[2][1], value[0]));
  EXPECT_TRUE(at::equal(key_cache[0][0], key[2]));
  EXPECT_TRUE(at::equal(value_cache[0][0], value[2]));
  // Only the two written slots changed.
  EXPECT_EQ(key_cache.ne(0).any(-1).any(-1).sum().item<int64_t>(), 2);
}

}  // namespace
}  // namespace nanovllm::kernels::cpu
