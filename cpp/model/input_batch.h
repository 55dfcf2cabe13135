// The flat inputs of one engine step: every scheduled chunk's tokens laid end to end, with
// what attention needs to find each sequence's K/V in the paged cache. Built in host
// buffers that keep their capacity across steps.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "nanovllm/model_runner.h"

namespace nanovllm {

class InputBatch {
 public:
  // Fills the buffers from the chunks (a chunk covers positions
  // [seq->num_computed_tokens(), + num_tokens) of its sequence). Throws std::logic_error
  // when a chunk does not fit its sequence or its block table.
  void build(const std::vector<ScheduledChunk>& batch, int block_size);

  int num_tokens() const { return static_cast<int>(token_ids_.size()); }
  int num_seqs() const { return static_cast<int>(context_lens_.size()); }

  // Views of the buffers, valid until the next build().
  const at::Tensor& token_ids() const { return token_ids_view_; }        // int64 [tokens]
  const at::Tensor& positions() const { return positions_view_; }        // int64 [tokens]
  // Cache slot of each token: block_table[pos / block_size] * block_size + pos % block_size.
  const at::Tensor& slot_mapping() const { return slot_mapping_view_; }  // int64 [tokens]
  const at::Tensor& query_start_loc() const { return query_start_loc_view_; }  // int32 [seqs + 1]
  // Tokens of each sequence in the cache once this step's are stored.
  const at::Tensor& context_lens() const { return context_lens_view_; }  // int32 [seqs]
  // Each sequence's blocks covering its context, padded with -1.
  const at::Tensor& block_tables() const { return block_tables_view_; }  // int32 [seqs, max_blocks]
  // Token index of each chunk that samples (its last token), in batch order.
  const at::Tensor& sample_indices() const { return sample_indices_view_; }  // int64 [samples]

 private:
  std::vector<int64_t> token_ids_;
  std::vector<int64_t> positions_;
  std::vector<int64_t> slot_mapping_;
  std::vector<int32_t> query_start_loc_;
  std::vector<int32_t> context_lens_;
  std::vector<int32_t> block_tables_;
  std::vector<int64_t> sample_indices_;

  at::Tensor token_ids_view_;
  at::Tensor positions_view_;
  at::Tensor slot_mapping_view_;
  at::Tensor query_start_loc_view_;
  at::Tensor context_lens_view_;
  at::Tensor block_tables_view_;
  at::Tensor sample_indices_view_;
};

}  // namespace nanovllm
