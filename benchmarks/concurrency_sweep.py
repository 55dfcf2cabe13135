"""Throughput against the number of concurrent requests (1..64), ours and transformers,
on the cpu-throughput workload's first N requests; writes a PNG plot and JSON.

    python benchmarks/concurrency_sweep.py [--levels 1,2,4,8,16,32,64] [--plot out.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_throughput import run_ours, run_peer  # noqa: E402
from workloads import random_requests  # noqa: E402

from nanovllm.builtin_models import DEFAULT_MODEL, resolve_model  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--levels", default="1,2,4,8,16,32,64")
    parser.add_argument("--output-len", type=int, default=64,
                        help="tokens per request (fixed, so levels compare like for like)")
    parser.add_argument("--plot", default="benchmarks/results/concurrency.png")
    parser.add_argument("--json", default="benchmarks/results/concurrency.json")
    args = parser.parse_args(argv)

    model_dir = resolve_model(args.model)
    levels = [int(x) for x in args.levels.split(",")]
    rows = []
    for n in levels:
        requests = random_requests(n, (32, 256), (args.output_len, args.output_len))
        ours = run_ours(model_dir, requests, args.dtype, None, max_num_seqs=256)
        peer = run_peer(model_dir, requests, args.dtype, batch_size=None)
        rows.append({"concurrency": n, "nanovllm": ours.tok_per_s, "transformers": peer.tok_per_s})
        print(f"{n:>4} requests: nanovllm {ours.tok_per_s:8.1f} tok/s   "
              f"transformers {peer.tok_per_s:8.1f} tok/s   ratio {ours.tok_per_s / peer.tok_per_s:.2f}x",
              flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"model": args.model, "dtype": args.dtype, "rows": rows}, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(levels, [r["nanovllm"] for r in rows], marker="o", label="nanovllm")
    ax.plot(levels, [r["transformers"] for r in rows], marker="s", label="transformers")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("output tokens / s")
    ax.set_title(f"{args.model} {args.dtype}, {args.output_len} new tokens each")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
