"""cpu-throughput: 64 random requests on Qwen2.5-0.5B (bf16), ours against transformers.

    python benchmarks/cpu_throughput.py [--num-requests 64] [--json out.json]
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
from workloads import cpu_throughput_requests  # noqa: E402

from nanovllm import LLM, SamplingParams  # noqa: E402
from nanovllm.builtin_models import DEFAULT_MODEL, resolve_model  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def run_ours(model_dir: Path, requests, dtype: str, quantization: str | None, max_num_seqs: int):
    llm = LLM(str(model_dir), dtype=dtype, quantization=quantization, max_num_seqs=max_num_seqs)
    llm.generate([[1] * 16], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
    params = [
        SamplingParams(temperature=0.6, ignore_eos=True, max_tokens=r.max_tokens, seed=i)
        for i, r in enumerate(requests)
    ]
    start = time.perf_counter()
    outputs = llm.generate([r.prompt_token_ids for r in requests], params, use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    assert tokens == sum(r.max_tokens for r in requests), "every request must run to max_tokens"
    name = f"nanovllm {dtype}" + (f" {quantization}" if quantization else "")
    del llm
    return Result(name, tokens, seconds)


def run_peer(model_dir: Path, requests, dtype: str, batch_size: int | None):
    model = load_hf(str(model_dir), DTYPES[dtype])
    hf_generate(model, [[1] * 16], [4], do_sample=False)  # warm-up
    outputs, seconds = hf_generate(
        model,
        [r.prompt_token_ids for r in requests],
        [r.max_tokens for r in requests],
        do_sample=True,
        temperature=0.6,
        batch_size=batch_size,
    )
    return hf_result(f"transformers {dtype}", outputs, seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--quantization", default="", choices=["", "int8"])
    parser.add_argument("--peer-batch-size", type=int, default=None,
                        help="transformers batch size (default: all requests in one batch)")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    model_dir = resolve_model(args.model)
    requests = cpu_throughput_requests(args.num_requests)
    results = [run_ours(model_dir, requests, args.dtype, args.quantization, args.max_num_seqs)]
    if not args.skip_peer:
        results.append(run_peer(model_dir, requests, args.dtype, args.peer_batch_size))
    title = f"cpu-throughput: {len(requests)} requests, {args.model}"
    print_table(title, results, baseline=results[-1].engine)
    save_json(args.json, "cpu-throughput", results, model=args.model)


if __name__ == "__main__":
    main()
