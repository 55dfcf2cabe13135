"""The nanovllm command, run as a user runs it (in a subprocess)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nanovllm
from conftest import MAX_MODEL_LEN, SMOL, require_core

PACKAGE_ROOT = str(Path(nanovllm.__file__).resolve().parents[1])


def _run(
    *args: str, stdin: str | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ) | (env or {})
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT, *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(
        [sys.executable, "-m", "nanovllm.cli", *args],
        input=stdin,
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_help_lists_commands_and_examples() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for word in ("generate", "chat", "models", "bench", "serve", "examples:", SMOL):
        assert word in result.stdout


def test_generate_help_shows_sampling_and_engine_flags() -> None:
    require_core()
    result = _run("generate", "--help")
    assert result.returncode == 0
    for flag in (
        "--max-tokens",
        "--temperature",
        "--top-p",
        "--stop",
        "--json",
        "--chat",
        "--max-num-seqs",
        "--dtype",
    ):
        assert flag in result.stdout


def test_bench_help_lists_workloads() -> None:
    result = _run("bench", "--help")
    assert result.returncode == 0
    for workload in (
        "cpu-throughput",
        "cpu-latency",
        "concurrency-sweep",
        "gpu-nanovllm",
        "serving",
    ):
        assert workload in result.stdout


def test_profile_table_is_printed_at_exit(smol_path: Path) -> None:
    """NANOVLLM_PROFILE=1: where the runner's steps went, per phase, on stderr at exit."""
    require_core()
    env = {"NANOVLLM_PROFILE": "1"}
    result = _run(
        "generate", "--model", str(smol_path), "--max-model-len", "256", "--temperature", "0",
        "--max-tokens", "4", "--no-progress", "The capital of France is", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "nanovllm profile" in result.stderr
    # One prefill step, then three single-sequence decode steps.
    assert "prefill" in result.stderr and "decode, 1 seq: 3 steps" in result.stderr
    for phase in ("qkv proj", "attention", "gate/up proj", "lm head", "sampling"):
        assert phase in result.stderr


def test_models_lists_builtin_models(smol_path: Path) -> None:
    result = _run("models")
    assert result.returncode == 0
    line = next(line for line in result.stdout.splitlines() if line.startswith(SMOL))
    assert " yes " in line  # prepared by the smol_path fixture


def test_serve_delegates_to_nanovllm_server() -> None:
    if importlib.util.find_spec("nanovllm.server") is None:
        result = _run("serve")
        assert result.returncode == 2 and "nanovllm.server" in result.stderr
    else:
        result = _run("serve", "--help")
        assert result.returncode == 0 and "usage:" in result.stdout


def test_generate_json_matches_the_library(llm: Any, smol_path: Path) -> None:
    prompts = ["The capital of France is", "2 + 2 ="]
    result = _run(
        "generate", "--model", str(smol_path), "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN),
        "--temperature", "0", "--max-tokens", "8", "--json", "--no-progress", *prompts,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    from nanovllm import SamplingParams

    expected = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)
    assert [r["prompt"] for r in records] == prompts
    assert [r["outputs"][0]["text"] for r in records] == [e.outputs[0].text for e in expected]
    assert all(r["outputs"][0]["finish_reason"] in ("stop", "length") for r in records)
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("2 requests, ") and summary.endswith(" tok/s")


def test_generate_reads_stdin_and_reports_bad_values(smol_path: Path) -> None:
    require_core()
    result = _run(
        "generate", "--model", str(smol_path), "--max-model-len", "256", "--temperature", "0",
        "--max-tokens", "4", "--n", "2", "--no-progress", stdin="Hello\n\nBonjour\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("=== [") == 4  # 2 prompts x 2 samples
    bad = _run("generate", "--model", str(smol_path), "--top-p", "0", "hi")
    assert bad.returncode == 1 and "top_p = 0" in bad.stderr and "(0, 1]" in bad.stderr


def test_chat_repl_answers_resets_and_exits(smol_path: Path) -> None:
    require_core()
    result = _run(
        "chat", "--model", str(smol_path), "--max-model-len", "512", "--temperature", "0",
        "--max-tokens", "8", stdin="What is 2 + 2?\n/reset\nAnd 3 + 3?\n/exit\nnever read\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(">>> ") == 4  # two questions, /reset, /exit; the rest unread
    assert "(conversation reset)" in result.stderr
