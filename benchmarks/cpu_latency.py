"""cpu-latency: one chat request, 128 greedy tokens on Qwen2.5-0.5B; ours against
transformers (and llama.cpp on the Q4_K_M GGUF when llama-cpp-python is installed).

    python benchmarks/cpu_latency.py [--variants bfloat16,int8] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from hf_peer import hf_generate, hf_result, load_hf  # noqa: E402
from report import Result, print_table, save_json  # noqa: E402
from workloads import LATENCY_PROMPT  # noqa: E402

from nanovllm import LLM, SamplingParams  # noqa: E402
from nanovllm.builtin_models import DEFAULT_MODEL, resolve_model  # noqa: E402

NEW_TOKENS = 128
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def chat_prompt_ids(model_dir: Path) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    messages = [{"role": "user", "content": LATENCY_PROMPT}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) else ids)


def run_ours(model_dir: Path, prompt: list[int], variant: str, repeats: int) -> Result:
    dtype, _, quantization = variant.partition("+")
    if variant == "int8":
        dtype, quantization = "bfloat16", "int8"
    llm = LLM(str(model_dir), dtype=dtype, quantization=quantization)
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    llm.generate([prompt], params, use_tqdm=False)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        llm.generate([prompt], params, use_tqdm=False)
        best = min(best, time.perf_counter() - start)
    return Result(f"nanovllm {variant}", NEW_TOKENS, best)


def run_hf(model_dir: Path, prompt: list[int], dtype: str) -> Result:
    model = load_hf(str(model_dir), DTYPES[dtype])
    hf_generate(model, [prompt], [8], do_sample=False)  # warm-up
    outputs, seconds = hf_generate(model, [prompt], [NEW_TOKENS], do_sample=False)
    return hf_result(f"transformers {dtype}", outputs, seconds)


def run_llama_cpp(gguf: Path, prompt: list[int], threads: int) -> Result | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=threads, verbose=False)
    llm.eval(prompt[:8])
    llm.reset()
    start = time.perf_counter()
    count = 0
    for token in llm.generate(prompt, temp=0.0, top_k=1):
        count += 1
        if count == NEW_TOKENS:
            break
    return Result(f"llama.cpp Q4_K_M ({threads} threads)", count, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--variants", default="bfloat16",
                        help="comma-separated: bfloat16, float32, int8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--peer-dtypes", default="bfloat16")
    parser.add_argument("--gguf", default=None, help="GGUF file for the llama.cpp peer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    model_dir = resolve_model(args.model)
    prompt = chat_prompt_ids(model_dir)
    results = [run_ours(model_dir, prompt, v, args.repeats) for v in args.variants.split(",") if v]
    for dtype in filter(None, args.peer_dtypes.split(",")):
        results.append(run_hf(model_dir, prompt, dtype))
    if args.gguf:
        llama = run_llama_cpp(Path(args.gguf), prompt, args.threads)
        if llama:
            results.append(llama)
    print_table(
        f"cpu-latency: 1 request, {len(prompt)} prompt tokens, {NEW_TOKENS} new, {args.model}",
        results,
        baseline="transformers bfloat16",
    )
    save_json(args.json, "cpu-latency", results, model=args.model, prompt_tokens=len(prompt))


if __name__ == "__main__":
    main()
