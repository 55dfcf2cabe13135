// Generating from C++ with libnanovllm: load a Hugging Face model folder, queue prompts
// given as token ids, step the engine until every request is done, print the generated
// ids. Greedy; tokenization is the caller's business (the Python package does it).
//
//   nanovllm_generate MODEL_DIR --prompt-ids 504,3575,282,4649,314 --prompt-ids 1604,3987
//                     [--max-tokens 16] [--dtype float32] [--num-kvcache-blocks 64]
//                     [--num-threads 2] [--ignore-eos]
//
// Run it with GOMP_SPINCOUNT=30000 (the Python package sets it): OpenMP workers that spin
// without bound slow every step down on cores shared with other work, and workers that
// sleep at once (OMP_WAIT_POLICY=PASSIVE) are slow to wake for the next layer's kernels.
//
// Output, one line per request in the order given, then the timing:
//   request 0: 5 prompt tokens -> 16 tokens (length): 7042 30 198 ...
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "nanovllm/nanovllm.h"

namespace {

struct Options {
  nanovllm::EngineConfig config;
  std::vector<std::vector<int32_t>> prompts;
  nanovllm::SamplingParams params;
};

constexpr const char* kUsage =
    "usage: nanovllm_generate MODEL_DIR --prompt-ids ID,ID,... [--prompt-ids ...]\n"
    "                         [--max-tokens N] [--dtype auto|float32|bfloat16|float16]\n"
    "                         [--num-kvcache-blocks N] [--num-threads N] [--ignore-eos]\n";

int parse_int(std::string_view flag, const std::string& text) {
  size_t end = 0;
  int value = 0;
  try {
    value = std::stoi(text, &end);
  } catch (const std::exception&) {
    end = 0;
  }
  if (end == 0 || end != text.size()) {
    throw std::invalid_argument(std::string(flag) + " expects an integer, got \"" + text + "\"");
  }
  return value;
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const size_t end = comma == std::string::npos ? text.size() : comma;
    ids.push_back(parse_int("--prompt-ids", text.substr(start, end - start)));
    start = end + 1;
  }
  return ids;
}

Options parse_args(int argc, char** argv) {
  if (argc < 2) throw std::invalid_argument("missing MODEL_DIR");
  Options options;
  options.config.model = argv[1];
  options.params.temperature = 0.0f;  // greedy
  options.params.max_tokens = 16;
  for (int i = 2; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--ignore-eos") {
      options.params.ignore_eos = true;
      continue;
    }
    if (i + 1 >= argc) throw std::invalid_argument(std::string(flag) + " expects a value");
    const std::string value = argv[++i];
    if (flag == "--prompt-ids") {
      options.prompts.push_back(parse_ids(value));
    } else if (flag == "--max-tokens") {
      options.params.max_tokens = parse_int(flag, value);
    } else if (flag == "--dtype") {
      options.config.dtype = value;
    } else if (flag == "--num-kvcache-blocks") {
      options.config.num_kvcache_blocks = parse_int(flag, value);
    } else if (flag == "--num-threads") {
      options.config.num_threads = parse_int(flag, value);
    } else {
      throw std::invalid_argument("unknown option " + std::string(flag));
    }
  }
  if (options.prompts.empty()) throw std::invalid_argument("give at least one --prompt-ids");
  options.config.validate();
  options.params.validate();
  return options;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse_args(argc, argv);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "error: %s\n%s", e.what(), kUsage);
    return 2;
  }

  try {
    const auto load_start = std::chrono::steady_clock::now();
    nanovllm::LLMEngine engine(options.config, nanovllm::create_torch_model_runner(options.config));
    const double load_seconds = seconds_since(load_start);

    // Request ids in the order the prompts were given; outputs arrive per step, mixed.
    std::vector<int64_t> ids;
    std::map<int64_t, nanovllm::RequestOutput> results;
    for (const std::vector<int32_t>& prompt : options.prompts) {
      ids.push_back(engine.add_request(prompt, options.params));
    }
    const auto generate_start = std::chrono::steady_clock::now();
    while (engine.has_unfinished()) {
      for (nanovllm::RequestOutput& out : engine.step()) {
        nanovllm::RequestOutput& result = results[out.request_id];
        result.new_token_ids.insert(result.new_token_ids.end(), out.new_token_ids.begin(),
                                    out.new_token_ids.end());
        result.num_prompt_tokens = out.num_prompt_tokens;
        result.finish_reason = out.finish_reason;
      }
    }
    const double generate_seconds = seconds_since(generate_start);

    for (size_t i = 0; i < ids.size(); ++i) {
      const nanovllm::RequestOutput& result = results[ids[i]];
      std::printf("request %zu: %d prompt tokens -> %zu tokens (%s):", i, result.num_prompt_tokens,
                  result.new_token_ids.size(), nanovllm::to_string(result.finish_reason));
      for (int32_t token : result.new_token_ids) std::printf(" %d", token);
      std::printf("\n");
    }
    const nanovllm::EngineStats stats = engine.stats();
    std::printf("load %.2f s, generate %.2f s: %lld steps, %lld tokens, %.1f tokens/s\n",
                load_seconds, generate_seconds, static_cast<long long>(stats.num_steps),
                static_cast<long long>(stats.generation_tokens_total),
                static_cast<double>(stats.generation_tokens_total) / generate_seconds);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
