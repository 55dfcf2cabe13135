#include "input_batch.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include <ATen/ops/from_blob.h>

namespace nanovllm {
namespace {

template <typename T>
at::Tensor view_of(std::vector<T>& buffer, at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::from_blob(buffer.data(), sizes, at::TensorOptions().dtype(dtype));
}

}  // namespace

void InputBatch::build(const std::vector<ScheduledChunk>& batch, int block_size) {
  token_ids_.clear();
  positions_.clear();
  slot_mapping_.clear();
  query_start_loc_.assign(1, 0);
  context_lens_.clear();
  sample_indices_.clear();

  int max_blocks = 0;
  for (const ScheduledChunk& chunk : batch) {
    const Sequence& seq = *chunk.seq;
    const int start = seq.num_computed_tokens();
    const int end = start + chunk.num_tokens;
    const auto& table = seq.block_table();
    const int blocks_needed = (end + block_size - 1) / block_size;
    if (chunk.num_tokens < 1 || end > seq.num_tokens() ||
        blocks_needed > static_cast<int>(table.size()) ||
        (chunk.sample && end != seq.num_tokens())) {
      throw std::logic_error(
          "model runner: sequence " + std::to_string(seq.id()) + " scheduled for tokens [" +
          std::to_string(start) + ", " + std::to_string(end) + ") of " +
          std::to_string(seq.num_tokens()) + (chunk.sample ? " (sampling)" : "") + " with " +
          std::to_string(table.size()) + " blocks of " + std::to_string(block_size));
    }
    for (int pos = start; pos < end; ++pos) {
      token_ids_.push_back(seq.token_ids()[pos]);
      positions_.push_back(pos);
      slot_mapping_.push_back(int64_t{table[pos / block_size]} * block_size + pos % block_size);
    }
    query_start_loc_.push_back(static_cast<int32_t>(token_ids_.size()));
    context_lens_.push_back(end);
    if (chunk.sample) sample_indices_.push_back(static_cast<int64_t>(token_ids_.size()) - 1);
    max_blocks = std::max(max_blocks, blocks_needed);
  }

  const int num_seqs = static_cast<int>(batch.size());
  block_tables_.assign(static_cast<size_t>(num_seqs) * max_blocks, -1);
  for (int s = 0; s < num_seqs; ++s) {
    const auto& table = batch[s].seq->block_table();
    const int blocks = (context_lens_[s] + block_size - 1) / block_size;
    std::copy_n(table.begin(), blocks, block_tables_.begin() + static_cast<ptrdiff_t>(s) * max_blocks);
  }

  const int64_t tokens = num_tokens();
  token_ids_view_ = view_of(token_ids_, {tokens}, at::kLong);
  positions_view_ = view_of(positions_, {tokens}, at::kLong);
  slot_mapping_view_ = view_of(slot_mapping_, {tokens}, at::kLong);
  query_start_loc_view_ = view_of(query_start_loc_, {num_seqs + 1}, at::kInt);
  context_lens_view_ = view_of(context_lens_, {num_seqs}, at::kInt);
  block_tables_view_ = view_of(block_tables_, {num_seqs, max_blocks}, at::kInt);
  sample_indices_view_ =
      view_of(sample_indices_, {static_cast<int64_t>(sample_indices_.size())}, at::kLong);
}

}  // namespace nanovllm
