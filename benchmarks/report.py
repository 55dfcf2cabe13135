"""Printing and saving benchmark results: one table per run, ratios against the peer."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Result:
    engine: str
    tokens: int
    seconds: float
    # Single-request runs: the time to the first token (the prefill), measured on its own.
    first_token_seconds: float | None = None

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def decode_tok_per_s(self) -> float | None:
        """The tokens after the first over the time after the first token."""
        if self.first_token_seconds is None or self.seconds <= self.first_token_seconds:
            return None
        return (self.tokens - 1) / (self.seconds - self.first_token_seconds)


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def machine_description() -> str:
    import torch

    return (
        f"{cpu_model_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', '-')}, GOMP_SPINCOUNT="
        f"{os.environ.get('GOMP_SPINCOUNT', '-')}, load average {os.getloadavg()[0]:.1f}"
    )


def print_table(title: str, results: list[Result], baseline: str | None = None) -> None:
    base = next((r for r in results if r.engine == baseline), None)
    print(f"\n{title}")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {machine_description()}")
    split = any(r.first_token_seconds is not None for r in results)
    extra = f" {'first token ms':>14} {'decode tok/s':>12}" if split else ""
    print(f"{'engine':<36} {'tokens':>8} {'seconds':>9} {'tok/s':>9} {'ratio':>7}{extra}")
    for r in results:
        ratio = f"{r.tok_per_s / base.tok_per_s:.2f}x" if base and base.tok_per_s else "-"
        line = f"{r.engine:<36} {r.tokens:>8} {r.seconds:>9.2f} {r.tok_per_s:>9.1f} {ratio:>7}"
        if split:
            first = r.first_token_seconds
            decode = r.decode_tok_per_s
            line += f" {first * 1e3 if first is not None else float('nan'):>14.1f}"
            line += f" {decode if decode is not None else float('nan'):>12.1f}"
        print(line)


def save_json(path: str | Path | None, workload: str, results: list[Result], **extra) -> None:
    if not path:
        return
    payload = {
        "workload": workload,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_description(),
        "results": [
            asdict(r) | {"tok_per_s": r.tok_per_s, "decode_tok_per_s": r.decode_tok_per_s}
            for r in results
        ],
        **extra,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
