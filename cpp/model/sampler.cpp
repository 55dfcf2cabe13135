// Sampling with vLLM's semantics. Each row is computed on its own, in float32 on the CPU,
// with fixed loop orders: a row's token and logprobs depend on that row alone, never on
// batch size, batch order or thread count (batched ATen reductions split work by shape
// and may round differently from one batch to the next). The one batched op is the argmax
// of plain greedy rows on an accelerator, which is exact.
#include "sampler.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "philox.h"
#include "sampler_internal.h"

namespace nanovllm {

namespace detail {

void process_logits_row(float* logits, int64_t vocab_size, const SamplingRow& row) {
  const SamplingParams& params = *row.params;
  const bool repetition = params.repetition_penalty != 1.0f;
  const bool additive = params.frequency_penalty != 0.0f || params.presence_penalty != 0.0f;
  if (repetition || additive) {
    TORCH_CHECK(row.token_ids != nullptr, "a SamplingRow with penalties needs its token ids");
    const std::vector<int32_t>& tokens = *row.token_ids;
    const size_t num_prompt = static_cast<size_t>(row.num_prompt_tokens);
    // Sorting (id, is_output) pairs puts each distinct token's occurrences in one run: the
    // run is penalised once, and its output count is the number of pairs marked output.
    // Frequency and presence penalties alone need only the output tokens.
    std::vector<std::pair<int32_t, bool>> occurrences;
    const size_t first = repetition ? 0 : num_prompt;
    occurrences.reserve(tokens.size() - std::min(first, tokens.size()));
    for (size_t i = first; i < tokens.size(); ++i) {
      occurrences.emplace_back(tokens[i], i >= num_prompt);
    }
    std::sort(occurrences.begin(), occurrences.end());
    for (size_t run = 0; run < occurrences.size();) {
      const int32_t id = occurrences[run].first;
      int output_count = 0;
      for (; run < occurrences.size() && occurrences[run].first == id; ++run) {
        output_count += occurrences[run].second ? 1 : 0;
      }
      if (id < 0 || id >= vocab_size) continue;
      float& logit = logits[id];
      if (repetition) {
        logit = logit > 0.0f ? logit / params.repetition_penalty
                             : logit * params.repetition_penalty;
      }
      if (output_count > 0) {
        logit -= params.frequency_penalty * static_cast<float>(output_count);
        logit -= params.presence_penalty;
      }
    }
  }
  for (int32_t id : row.banned_token_ids) {
    if (id >= 0 && id < vocab_size) logits[id] = -std::numeric_limits<float>::infinity();
  }
}

}  // namespace detail

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Reductions over a row keep kLanes interleaved partial results, combined in a fixed order:
// the compiler may vectorise them (a strict left-to-right sum forbids it), and a row gives
// the same bits every time.
constexpr int64_t kLanes = 16;

template <typename ValueAt>
double lane_sum(int64_t n, ValueAt value_at) {
  double partial[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t lane = 0; lane < kLanes; ++lane) partial[lane] += value_at(i + lane);
  }
  for (; i < n; ++i) partial[i % kLanes] += value_at(i);
  double total = 0.0;
  for (double value : partial) total += value;
  return total;
}

// The loops over a whole row (the vocabulary: 150k floats per row and step for Qwen) are
// compiled twice, for the baseline and for AVX-512, and the CPU picks at load time. The
// file is compiled without floating-point contraction, so both give the same bits.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NANOVLLM_ROW_LOOP __attribute__((target_clones("avx512f", "default")))
#else
#define NANOVLLM_ROW_LOOP
#endif

// The largest value, NaN ignored (-inf when there is none).
NANOVLLM_ROW_LOOP float lane_max(const float* values, int64_t n) {
  float partial[kLanes];
  std::fill(partial, partial + kLanes, kNegInf);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t lane = 0; lane < kLanes; ++lane) {
      partial[lane] = values[i + lane] > partial[lane] ? values[i + lane] : partial[lane];
    }
  }
  for (; i < n; ++i) partial[0] = values[i] > partial[0] ? values[i] : partial[0];
  return *std::max_element(partial, partial + kLanes);
}

// Random choices walk the tokens in one fixed order, most probable first and lower id first
// among equals, so the token a draw selects (and which tokens top-k keeps on a tie) is a
// function of the row's values alone. `score` is the token's weight (its probability up to
// one common factor) when drawing, its raw logit when ranking top logprobs.
struct Candidate {
  float score;
  int32_t id;
};

bool comes_before(const Candidate& a, const Candidate& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

bool has_penalties(const SamplingParams& params) {
  return params.repetition_penalty != 1.0f || params.frequency_penalty != 0.0f ||
         params.presence_penalty != 0.0f;
}

// Greedy with nothing to adjust: the raw argmax is the answer.
bool is_plain_greedy(const SamplingRow& row) {
  return row.params->greedy() && !has_penalties(*row.params) && row.banned_token_ids.empty();
}

[[noreturn]] void throw_bad_row(int64_t row_index, const char* problem) {
  throw std::runtime_error("sampler: the logits of row " + std::to_string(row_index) + " " +
                           problem);
}

// First index of the largest logit, so the lowest id wins a tie.
int32_t argmax(const float* logits, int64_t vocab_size, int64_t row_index) {
  const float max_logit = lane_max(logits, vocab_size);
  if (max_logit == kNegInf) throw_bad_row(row_index, "are all -inf or NaN: no token can be chosen");
  return static_cast<int32_t>(std::find(logits, logits + vocab_size, max_logit) - logits);
}

// Candidates in draw order at the granularity of weight buckets, built by one counting
// sort: a bucket holds the weights that share sign, exponent and 4 mantissa bits (16 buckets
// per octave). A bucket is sorted only when a decision falls inside it (top-k's last token,
// top-p's boundary, the drawn token), so even a flat row that keeps most of the vocabulary
// costs O(n) plus one small sort, where sorting it all would cost O(n log n).
class DrawOrder {
 public:
  // Rebuilds from candidates of weight in (0, 1], in any order.
  void assign(const Candidate* candidates, size_t n) {
    std::fill(counts_.begin(), counts_.end(), 0u);
    for (size_t i = 0; i < n; ++i) ++counts_[key(candidates[i])];
    // Offsets from the heaviest bucket down; then a stable scatter, so tokens within a bucket
    // keep id order and the bucket masses below are summed in a fixed order.
    size_t offset = 0;
    buckets_.clear();
    for (size_t k = kNumKeys; k-- > 0;) {
      offsets_[k] = offset;
      if (counts_[k] > 0) buckets_.push_back({offset, offset + counts_[k], 0.0, false});
      offset += counts_[k];
    }
    tokens_.resize(n);
    for (size_t i = 0; i < n; ++i) tokens_[offsets_[key(candidates[i])]++] = candidates[i];
    for (Bucket& bucket : buckets_) bucket.mass = sum(bucket.begin, bucket.end);
  }

  size_t size() const { return buckets_.empty() ? 0 : buckets_.back().end; }

  double mass() const {
    double total = 0.0;
    for (const Bucket& bucket : buckets_) total += bucket.mass;
    return total;
  }

  // Keeps the first n tokens (top-k), n <= size().
  void keep_first(size_t n) {
    size_t b = 0;
    while (buckets_[b].end < n) ++b;
    truncate(b, n, sum_sorted(b, n));
  }

  // Keeps the shortest prefix whose mass reaches `threshold` (top-p). Returns false, keeping
  // everything, when even the whole falls short.
  bool keep_until(double threshold) {
    double before = 0.0;
    for (size_t b = 0; b < buckets_.size(); ++b) {
      if (before + buckets_[b].mass < threshold) {
        before += buckets_[b].mass;
        continue;
      }
      sort(b);
      double mass = 0.0;
      size_t end = buckets_[b].begin;
      // Short of the threshold by rounding where the bucket sums reached it: the whole bucket.
      while (end < buckets_[b].end && before + mass < threshold) mass += tokens_[end++].score;
      truncate(b, end, mass);
      return true;
    }
    return false;
  }

  // The token at which the running mass first exceeds `threshold` (the inverse CDF), or
  // nullopt when even the whole does not.
  std::optional<int32_t> token_exceeding(double threshold) {
    double before = 0.0;
    for (size_t b = 0; b < buckets_.size(); ++b) {
      if (before + buckets_[b].mass <= threshold) {
        before += buckets_[b].mass;
        continue;
      }
      sort(b);
      for (size_t i = buckets_[b].begin; i < buckets_[b].end; ++i) {
        before += tokens_[i].score;
        if (before > threshold) return tokens_[i].id;
      }
      // Short by rounding where the bucket sums exceeded it: the bucket's last token.
      return tokens_[buckets_[b].end - 1].id;
    }
    return std::nullopt;
  }

  int32_t last_token() {
    sort(buckets_.size() - 1);
    return tokens_[buckets_.back().end - 1].id;
  }

 private:
  struct Bucket {
    size_t begin;
    size_t end;
    double mass;
    bool sorted;
  };

  // Weights are positive floats, whose bits order like their values.
  static constexpr int kKeyShift = 19;  // drops all but 4 mantissa bits
  static constexpr size_t kNumKeys = (std::bit_cast<uint32_t>(1.0f) >> kKeyShift) + 1;
  static size_t key(const Candidate& candidate) {
    return std::bit_cast<uint32_t>(candidate.score) >> kKeyShift;
  }

  double sum(size_t begin, size_t end) const {
    return lane_sum(static_cast<int64_t>(end - begin),
                    [&](int64_t i) { return tokens_[begin + static_cast<size_t>(i)].score; });
  }

  double sum_sorted(size_t b, size_t end) {
    sort(b);
    return sum(buckets_[b].begin, end);
  }

  void sort(size_t b) {
    Bucket& bucket = buckets_[b];
    if (bucket.sorted) return;
    std::sort(tokens_.begin() + static_cast<ptrdiff_t>(bucket.begin),
              tokens_.begin() + static_cast<ptrdiff_t>(bucket.end), comes_before);
    bucket.sorted = true;
  }

  // Bucket b becomes the last one, ending at `end` (it is sorted) with mass `mass`.
  void truncate(size_t b, size_t end, double mass) {
    buckets_[b].end = end;
    buckets_[b].mass = mass;
    buckets_.resize(b + 1);
  }

  std::vector<Candidate> tokens_;
  std::vector<Bucket> buckets_;
  std::vector<uint32_t> counts_ = std::vector<uint32_t>(kNumKeys);
  std::vector<size_t> offsets_ = std::vector<size_t>(kNumKeys);
};

// Buffers reused across the rows one thread handles.
struct RowScratch {
  std::vector<float> logits;
  std::vector<Candidate> candidates;
  DrawOrder order;
  std::vector<Candidate> top;
};

// The token draw u selects. `order` holds the start of the draw order (every token of the
// row when complete); top-k keeps its first top_k tokens, the kept mass is row_mass when
// every token is kept, else summed. Returns nullopt when the choice lies beyond an
// incomplete order.
std::optional<int32_t> pick(DrawOrder& order, size_t top_k, std::optional<double> row_mass,
                            bool complete, float top_p, double u) {
  if (order.size() > top_k) order.keep_first(top_k);
  double kept_mass = row_mass ? *row_mass : order.mass();
  if (top_p < 1.0f) {
    // The nucleus: the shortest prefix holding top_p of the kept mass (always >= 1 token).
    // Falling short of a complete order is rounding: the nucleus is then all of it.
    if (!order.keep_until(static_cast<double>(top_p) * kept_mass) && !complete) {
      return std::nullopt;
    }
    kept_mass = order.mass();
    complete = true;
  }
  if (std::optional<int32_t> id = order.token_exceeding(u * kept_mass)) return id;
  // Short of a complete order is rounding of u * mass up to the whole: its last token.
  if (complete) return order.last_token();
  return std::nullopt;
}

// weights[i] = e^((logits[i] - max) / T), in place.
NANOVLLM_ROW_LOOP void exponentiate(float* logits, int64_t n, float max_logit, float temperature) {
  for (int64_t i = 0; i < n; ++i) logits[i] = detail::exp_nonpositive((logits[i] - max_logit) / temperature);
}

NANOVLLM_ROW_LOOP double sum_weights(const float* weights, int64_t n) {
  return lane_sum(n, [&](int64_t i) { return weights[i]; });
}

// sum of e^(raw[i] - max).
NANOVLLM_ROW_LOOP double sum_exp(const float* raw, int64_t n, float max_logit) {
  return lane_sum(n, [&](int64_t i) { return detail::exp_nonpositive(raw[i] - max_logit); });
}

// The tokens of weight >= floor (and > 0), in id order, into out; returns their count.
// A few hundred of the vocabulary pass: blocks of kLanes tokens are tested at once (one
// vector compare), and only a block with a passing token is copied, branch-free (which of
// its tokens pass is unpredictable).
NANOVLLM_ROW_LOOP size_t compact(const float* weights, int64_t n, float floor, Candidate* out) {
  size_t count = 0;
  const auto copy = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      out[count] = {weights[i], static_cast<int32_t>(i)};
      count += (weights[i] >= floor) & (weights[i] > 0.0f);
    }
  };
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    int passing = 0;
    for (int64_t lane = 0; lane < kLanes; ++lane) {
      passing += (weights[i + lane] >= floor) & (weights[i + lane] > 0.0f);
    }
    if (passing != 0) copy(i, i + kLanes);
  }
  copy(i, n);
  return count;
}

int32_t sample_random(float* logits, int64_t vocab_size, const SamplingRow& row,
                      int64_t row_index, RowScratch& scratch) {
  const SamplingParams& params = *row.params;
  const float max_logit = lane_max(logits, vocab_size);
  if (!std::isfinite(max_logit)) {
    throw_bad_row(row_index, "have no finite maximum (all -inf or NaN, or +inf)");
  }
  // Each token's weight e^((x - max) / T) in (0, 1], 1 for the best token: its probability
  // up to one common factor. Subtracting before dividing keeps tiny temperatures from
  // overflowing. Banned (-inf) and NaN logits get weight 0 and are never drawn.
  exponentiate(logits, vocab_size, max_logit, params.temperature);
  const float* weights = logits;

  const size_t top_k = params.top_k > 0 && params.top_k < vocab_size
                           ? static_cast<size_t>(params.top_k)
                           : std::numeric_limits<size_t>::max();
  // min-p keeps p >= min_p * p_max, that is weight >= min_p.
  const bool bounded = top_k < std::numeric_limits<size_t>::max() || params.min_p > 0.0f;
  std::optional<double> row_mass;
  if (!bounded) row_mass = sum_weights(weights, vocab_size);
  const double u = detail::uniform_draw(row.seed, row.output_index);
  std::vector<Candidate>& candidates = scratch.candidates;
  candidates.resize(static_cast<size_t>(vocab_size));

  // Candidates are the tokens of weight >= floor: always an exact prefix of the draw order
  // (ties fall on the same side). Real logits put nearly all the mass within a few nats of
  // the best token, so the first floor (e^-8) usually holds hundreds of tokens, not the
  // vocabulary; the floor drops (e^-16, e^-32, e^-64, then every token with weight > 0)
  // only while the candidates cannot decide the draw.
  float floor = 3.3546262e-4f;
  for (;;) {
    floor = std::max(floor, params.min_p);
    const size_t count = compact(weights, vocab_size, floor, candidates.data());
    const bool complete = floor == params.min_p || count >= top_k;
    if (!bounded || complete) {
      scratch.order.assign(candidates.data(), count);
      if (auto id = pick(scratch.order, top_k, row_mass, complete, params.top_p, u)) return *id;
    }
    floor *= floor;  // underflows to 0 after e^-64
  }
}

// vLLM's default logprobs mode ("raw_logprobs"): logprobs describe the model's own
// distribution, log_softmax of the raw logits before penalties, bans, temperature and
// top-k / top-p / min-p.
void fill_logprobs(const float* raw, int64_t vocab_size, int num_top, SampledToken& out,
                   std::vector<Candidate>& top) {
  const float max_logit = lane_max(raw, vocab_size);
  const double sum = sum_exp(raw, vocab_size, max_logit);
  const double log_normalizer = max_logit + std::log(sum);
  out.logprob = static_cast<float>(raw[out.token_id] - log_normalizer);
  if (num_top <= 0) return;

  // The top N by raw logit, kept sorted. Ids rise through the scan, so once the list is full
  // a newcomer belongs in it only with a strictly greater logit than its last entry.
  const size_t capacity = static_cast<size_t>(num_top);
  top.clear();
  for (int64_t i = 0; i < vocab_size; ++i) {
    if (top.size() == capacity && !(raw[i] > top.back().score)) continue;
    const Candidate candidate{raw[i], static_cast<int32_t>(i)};
    top.insert(std::upper_bound(top.begin(), top.end(), candidate, comes_before), candidate);
    if (top.size() > capacity) top.pop_back();
  }
  out.top_logprobs.reserve(top.size());
  for (const Candidate& candidate : top) {
    out.top_logprobs.push_back(
        {candidate.id, static_cast<float>(candidate.score - log_normalizer)});
  }
}

SampledToken sample_row(const float* raw, int64_t vocab_size, const SamplingRow& row,
                        int64_t row_index, RowScratch& scratch) {
  const SamplingParams& params = *row.params;
  SampledToken out{};
  if (is_plain_greedy(row)) {
    out.token_id = argmax(raw, vocab_size, row_index);
  } else {
    // Processing happens in a copy: the batch may be the caller's tensor, and logprobs are
    // of the raw logits.
    scratch.logits.assign(raw, raw + vocab_size);
    float* logits = scratch.logits.data();
    detail::process_logits_row(logits, vocab_size, row);
    out.token_id = params.greedy() ? argmax(logits, vocab_size, row_index)
                                   : sample_random(logits, vocab_size, row, row_index, scratch);
  }
  if (params.logprobs >= 0) fill_logprobs(raw, vocab_size, params.logprobs, out, scratch.top);
  return out;
}

at::Tensor select_rows(const at::Tensor& logits, const std::vector<int64_t>& indices) {
  if (static_cast<int64_t>(indices.size()) == logits.size(0)) return logits;
  const at::Tensor index = at::tensor(indices, at::TensorOptions().dtype(at::kLong));
  return logits.index_select(0, index.to(logits.device()));
}

std::string shape_string(const at::Tensor& tensor) {
  std::string text = "[";
  for (int64_t d = 0; d < tensor.dim(); ++d) {
    text += (d > 0 ? ", " : "") + std::to_string(tensor.size(d));
  }
  return text + "]";
}

}  // namespace

std::vector<SampledToken> sample(const at::Tensor& logits, const std::vector<SamplingRow>& rows) {
  if (logits.dim() != 2 || logits.size(0) != static_cast<int64_t>(rows.size())) {
    throw std::invalid_argument("sample: logits must be [num_rows, vocab] with one row per "
                                "SamplingRow; got logits of shape " +
                                shape_string(logits) + " for " + std::to_string(rows.size()) +
                                " SamplingRows");
  }
  if (!at::isFloatingType(logits.scalar_type())) {
    throw std::invalid_argument(std::string("sample: logits must be floating point, got ") +
                                c10::toString(logits.scalar_type()));
  }
  std::vector<SampledToken> out(rows.size());
  // Off the CPU, plain greedy rows without logprobs take ATen's argmax where the logits live
  // (in their own dtype: widening to float32 keeps the order; ATen returns the first
  // maximal index), and only the other rows travel. On the CPU every row runs below.
  const bool on_cpu = logits.device().is_cpu();
  std::vector<int64_t> device_rows;
  std::vector<int64_t> host_rows;
  for (size_t i = 0; i < rows.size(); ++i) {
    const bool on_device = !on_cpu && is_plain_greedy(rows[i]) && rows[i].params->logprobs < 0;
    (on_device ? device_rows : host_rows).push_back(static_cast<int64_t>(i));
  }

  if (!device_rows.empty()) {
    const at::Tensor ids = select_rows(logits, device_rows).argmax(1).to(at::kCPU);
    const int64_t* id_data = ids.const_data_ptr<int64_t>();
    for (size_t j = 0; j < device_rows.size(); ++j) {
      out[device_rows[j]].token_id = static_cast<int32_t>(id_data[j]);
    }
  }

  if (!host_rows.empty()) {
    // Float32 on the CPU: no copy when the logits already are.
    const at::Tensor work = select_rows(logits, host_rows).to(at::kCPU, at::kFloat).contiguous();
    const int64_t vocab_size = work.size(1);
    const float* base = work.const_data_ptr<float>();
    const int64_t num_rows = static_cast<int64_t>(host_rows.size());
    // Rows are dealt round-robin so the costly ones (random sampling, logprobs) spread
    // evenly over the threads whatever their position in the batch.
    const int64_t lanes = std::min<int64_t>(num_rows, at::get_num_threads());
    at::parallel_for(0, lanes, 1, [&](int64_t lane_begin, int64_t lane_end) {
      // Kept across steps: a row's scratch is a few MB that would otherwise be faulted in
      // afresh every step.
      thread_local RowScratch scratch;
      for (int64_t lane = lane_begin; lane < lane_end; ++lane) {
        for (int64_t j = lane; j < num_rows; j += lanes) {
          const int64_t row_index = host_rows[j];
          out[row_index] =
              sample_row(base + j * vocab_size, vocab_size, rows[row_index], row_index, scratch);
        }
      }
    });
  }
  return out;
}

}  // namespace nanovllm
