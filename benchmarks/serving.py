"""serving: the OpenAI-compatible server under concurrent streaming clients.

Sends the cpu-throughput workload's random requests (token-id prompts, ignore_eos, so every
request produces exactly max_tokens) as streamed /v1/completions, at a fixed concurrency
or as a seeded Poisson process, and reports time to first token (TTFT), time per output
token (TPOT, after the first), inter-token latency (ITL, between streamed chunks) at p50 /
p99, and output tok/s. The peer is the same engine offline (``LLM.generate`` on the same
requests, after the server is gone): the ratio is what serving over HTTP costs.

    python benchmarks/serving.py --model SmolLM2-135M-Instruct --dtype float32 --concurrency 16
    python benchmarks/serving.py --url http://127.0.0.1:8000 --request-rate 4 --num-requests 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from cpu_throughput import run_ours
from nanovllm.builtin_models import DEFAULT_MODEL, resolve_model
from report import Result, print_table, save_json
from workloads import Request, random_requests


@dataclass
class Timing:
    start: float = 0.0
    chunks: list[float] = field(default_factory=list)  # arrival of each chunk with tokens
    output_tokens: int = 0


def _pairs(text: str) -> tuple[int, int]:
    low, high = (int(x) for x in text.split(","))
    return low, high


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "mean_ms": statistics.fmean(values) * 1000}


class LocalServer:
    """``nanovllm serve`` on a free loopback port, until stop()."""

    def __init__(self, model: str, dtype: str, extra: list[str]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "nanovllm", "serve", "--model", model, "--dtype", dtype]
        command += ["--port", str(port), "--log-level", "warning", *extra]
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + 600
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("the server did not become ready in 600 s")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


async def _one(
    client: httpx.AsyncClient, model: str, index: int, request: Request, timing: Timing
) -> None:
    body = {
        "model": model,
        "prompt": request.prompt_token_ids,
        "max_tokens": request.max_tokens,
        "temperature": 0.6,
        "seed": index,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    timing.start = time.perf_counter()
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            if chunk.get("usage"):
                timing.output_tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"]:
                timing.chunks.append(time.perf_counter())


async def _drive(
    url: str,
    model: str,
    requests: list[Request],
    concurrency: int | None,
    rate: float | None,
    seed: int,
) -> tuple[list[Timing], float]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as client:
        await _one(client, model, 0, Request([1] * 8, 2), Timing())  # warm-up
        timings = [Timing() for _ in requests]
        gate = asyncio.Semaphore(concurrency or len(requests))
        arrivals = random.Random(seed)

        async def gated(i: int) -> None:
            async with gate:
                await _one(client, model, i, requests[i], timings[i])

        start = time.perf_counter()
        tasks = []
        for i in range(len(requests)):
            tasks.append(asyncio.create_task(gated(i)))
            if rate is not None:
                await asyncio.sleep(arrivals.expovariate(rate))
        await asyncio.gather(*tasks)
        return timings, time.perf_counter() - start


def _latencies(timings: list[Timing]) -> dict[str, dict[str, float]]:
    ttft = [t.chunks[0] - t.start for t in timings if t.chunks]
    tpot = [
        (t.chunks[-1] - t.chunks[0]) / (t.output_tokens - 1) for t in timings if t.output_tokens > 1
    ]
    itl = [b - a for t in timings for a, b in zip(t.chunks, t.chunks[1:])]
    return {"ttft": _percentiles(ttft), "tpot": _percentiles(tpot), "itl": _percentiles(itl)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--url", help="a running server (default: start one with --model / --dtype)"
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="model to serve, or the name a running server serves"
    )
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for nanovllm serve (repeatable)",
    )
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--prompt-len", type=_pairs, default=(32, 256), metavar="MIN,MAX")
    parser.add_argument("--output-len", type=_pairs, default=(32, 128), metavar="MIN,MAX")
    parser.add_argument(
        "--concurrency",
        type=int,
        help="most requests in flight (default: all, or unbounded with --request-rate)",
    )
    parser.add_argument(
        "--request-rate", type=float, help="Poisson arrivals per second (default: all at once)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip-peer",
        action="store_true",
        help="no offline LLM.generate run (always skipped with --url)",
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    requests = random_requests(args.num_requests, args.prompt_len, args.output_len, seed=args.seed)
    server = None if args.url else LocalServer(args.model, args.dtype, args.server_arg)
    url = args.url or server.url
    try:
        timings, seconds = asyncio.run(
            _drive(url, args.model, requests, args.concurrency, args.request_rate, args.seed)
        )
    finally:
        if server is not None:
            server.stop()

    tokens = sum(t.output_tokens for t in timings)
    assert tokens == sum(r.max_tokens for r in requests), "every request must run to max_tokens"
    load = (
        f"rate {args.request_rate}/s"
        if args.request_rate
        else f"concurrency {args.concurrency or len(requests)}"
    )
    results = [Result(f"server {args.dtype} ({load})", tokens, seconds)]
    if not (args.url or args.skip_peer):
        results.append(
            run_ours(resolve_model(args.model), requests, args.dtype, "", max_num_seqs=256)
        )
    latencies = _latencies(timings)

    print_table(
        f"serving: {len(requests)} requests, {args.model}, {load}",
        results,
        baseline=results[-1].engine,
    )
    print(f"\n{'latency (ms)':<14} {'p50':>9} {'p99':>9} {'mean':>9}")
    for name, values in latencies.items():
        print(
            f"{name.upper():<14} {values['p50_ms']:>9.1f} {values['p99_ms']:>9.1f} {values['mean_ms']:>9.1f}"
        )
    save_json(
        args.json,
        "serving",
        results,
        model=args.model,
        load=load,
        requests_per_s=len(requests) / seconds,
        latencies=latencies,
    )


if __name__ == "__main__":
    main()
