"""Throughput against the number of concurrent requests (1..64), ours and transformers,
on the cpu-throughput workload's prompts with a fixed output length; writes a PNG plot and
JSON. Each engine loads once; at each level both run in this process, one after the other.

    python benchmarks/concurrency_sweep.py [--levels 1,2,4,8,16,32,64] [--plot out.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nanovllm.builtin_models import DEFAULT_MODEL, resolve_model  # first: before torch loads

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_throughput import load_ours, load_peer, time_ours, time_peer
from workloads import random_requests

RESULTS = Path(__file__).resolve().parent / "results"


def plot(rows: list[dict], title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [r["concurrency"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(levels, [r["nanovllm"] for r in rows], marker="o", label="nano-vllm")
    ax.plot(levels, [r["transformers"] for r in rows], marker="s", label="transformers")
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(n) for n in levels])
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("output tokens / s")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--levels", default="1,2,4,8,16,32,64")
    parser.add_argument(
        "--output-len",
        type=int,
        default=64,
        help="tokens per request (fixed, so levels compare like for like)",
    )
    parser.add_argument("--plot", default=str(RESULTS / "concurrency.png"))
    parser.add_argument("--json", default=str(RESULTS / "concurrency.json"))
    args = parser.parse_args(argv)

    model_dir = resolve_model(args.model)
    levels = [int(x) for x in args.levels.split(",")]
    workloads = {
        n: random_requests(n, (32, 256), (args.output_len, args.output_len)) for n in levels
    }
    # Both loaded at once, so that each level runs the two back to back.
    ours = load_ours(model_dir, args.dtype, max_num_seqs=max(levels))
    peer = load_peer(model_dir, args.dtype)
    rows = []
    for n in levels:
        tokens = n * args.output_len
        ours_tok_s = tokens / time_ours(ours, workloads[n])
        peer_tok_s = tokens / time_peer(peer, workloads[n], batch_size=None)
        rows.append({"concurrency": n, "nanovllm": ours_tok_s, "transformers": peer_tok_s})
        print(
            f"{n:>4} requests: nanovllm {ours_tok_s:8.1f} tok/s   transformers "
            f"{peer_tok_s:8.1f} tok/s   ratio {ours_tok_s / peer_tok_s:.2f}x",
            flush=True,
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": args.model, "dtype": args.dtype, "output_len": args.output_len}
    Path(args.json).write_text(json.dumps(payload | {"rows": rows}, indent=2) + "\n")
    title = f"{args.model} {args.dtype}, {args.output_len} new tokens per request"
    plot(rows, title, args.plot)
    print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
