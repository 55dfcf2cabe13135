"""Printing and saving benchmark results: one table per run, ratios against the peer."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Result:
    engine: str
    tokens: int
    seconds: float

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def machine_description() -> str:
    import os

    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def print_table(title: str, results: list[Result], baseline: str | None = None) -> None:
    base = next((r for r in results if r.engine == baseline), None)
    print(f"\n{title}")
    print(f"{'engine':<36} {'tokens':>8} {'seconds':>9} {'tok/s':>9} {'ratio':>7}")
    for r in results:
        ratio = f"{r.tok_per_s / base.tok_per_s:.2f}x" if base and base.tok_per_s else "-"
        print(f"{r.engine:<36} {r.tokens:>8} {r.seconds:>9.2f} {r.tok_per_s:>9.1f} {ratio:>7}")


def save_json(path: str | Path | None, workload: str, results: list[Result], **extra) -> None:
    if not path:
        return
    payload = {
        "workload": workload,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_description(),
        "results": [asdict(r) | {"tok_per_s": r.tok_per_s} for r in results],
        **extra,
    }
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
