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

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
