"""cpu-throughput: 64 random requests on Qwen2.5-0.5B (bf16), ours against transformers.

Both engines run in this one process, one after the other, on the same requests: the ratio
is what counts on a shared machine. Importing nanovllm first also gives the peer the same
OpenMP settings (nanovllm/_threading.py).

    python benchmarks/cpu_throughput.py [--num-requests 64] [--repeats 1] [--json out.json]
    NANOVLLM_PROFILE=1 python benchmarks/cpu_throughput.py --skip-peer   # + step profile
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nanovllm import LLM, SamplingParams  # first: before torch loads
from nanovllm.builtin_models import DEFAULT_MODEL, resolve_model

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from hf_peer import hf_generate, load_hf
from report import Result, print_table, save_json
from workloads import Request, cpu_throughput_requests

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def load_ours(model_dir: Path, dtype: str, quantization: str = "", max_num_seqs: int = 256) -> LLM:
    llm = LLM(str(model_dir), dtype=dtype, quantization=quantization, max_num_seqs=max_num_seqs)
    llm.generate([[1] * 16], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
    return llm


def time_ours(llm: LLM, requests: list[Request], repeats: int = 1) -> float:
    """Best wall time of generating every request to its max_tokens (sampled, T = 0.6)."""
    params = [
        SamplingParams(temperature=0.6, ignore_eos=True, max_tokens=r.max_tokens, seed=i)
        for i, r in enumerate(requests)
    ]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = llm.generate([r.prompt_token_ids for r in requests], params, use_tqdm=False)
        best = min(best, time.perf_counter() - start)
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        assert tokens == sum(r.max_tokens for r in requests), "every request must run to max_tokens"
    return best


def run_ours(
    model_dir: Path,
    requests: list[Request],
    dtype: str,
    quantization: str = "",
    max_num_seqs: int = 256,
    repeats: int = 1,
) -> Result:
    llm = load_ours(model_dir, dtype, quantization, max_num_seqs)
    seconds = time_ours(llm, requests, repeats)
    del llm
    name = f"nanovllm {dtype}" + (f" {quantization}" if quantization else "")
    return Result(name, sum(r.max_tokens for r in requests), seconds)


def time_peer(model, requests: list[Request], batch_size: int | None, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        _, seconds = hf_generate(
            model,
            [r.prompt_token_ids for r in requests],
            [r.max_tokens for r in requests],
            do_sample=True,
            temperature=0.6,
            batch_size=batch_size,
        )
        best = min(best, seconds)
    return best


def load_peer(model_dir: Path, dtype: str):
    model = load_hf(str(model_dir), DTYPES[dtype])
    hf_generate(model, [[1] * 16], [4], do_sample=False)  # warm-up
    return model


def run_peer(
    model_dir: Path, requests: list[Request], dtype: str, batch_size: int | None, repeats: int = 1
) -> Result:
    seconds = time_peer(load_peer(model_dir, dtype), requests, batch_size, repeats)
    return Result(f"transformers {dtype}", sum(r.max_tokens for r in requests), seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--quantization", default="", choices=["", "int8"])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each engine; best counts")
    parser.add_argument(
        "--peer-batch-size",
        type=int,
        default=None,
        help="transformers batch size (default: all requests in one batch)",
    )
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    model_dir = resolve_model(args.model)
    requests = cpu_throughput_requests(args.num_requests)
    results = [
        run_ours(
            model_dir, requests, args.dtype, args.quantization, args.max_num_seqs, args.repeats
        )
    ]
    if not args.skip_peer:
        results.append(
            run_peer(model_dir, requests, args.dtype, args.peer_batch_size, args.repeats)
        )
    title = f"cpu-throughput: {len(requests)} requests, {args.model}"
    print_table(title, results, baseline=results[-1].engine)
    save_json(args.json, "cpu-throughput", results, model=args.model)


if __name__ == "__main__":
    main()
