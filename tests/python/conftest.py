"""Shared fixtures: real built-in models, one engine for the whole session.

Tests that need the engine use ``llm`` (SmolLM2-135M-Instruct, float32 so that greedy
texts compare exactly); tests that need only a tokenizer use ``smol_tokenizer`` /
``qwen_tokenizer``. Each skips with the reason when its model cannot be prepared here
or the ``nanovllm._core`` extension is not built.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

SMOL = "SmolLM2-135M-Instruct"
QWEN = "Qwen2.5-Coder-0.5B-Instruct"
MAX_MODEL_LEN = 1024


def _prepared(name: str) -> Path:
    from nanovllm.builtin_models import ModelPreparationError, prepare_model

    try:
        return prepare_model(name, quiet=True)
    except ModelPreparationError as exc:
        pytest.skip(f"{name} cannot be prepared here: {exc}")


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def require_core() -> None:
    if importlib.util.find_spec("nanovllm._core") is None:
        pytest.skip("the nanovllm._core extension is not built (cmake --build build/dev)")


@pytest.fixture(scope="session")
def smol_path() -> Path:
    return _prepared(SMOL)


@pytest.fixture(scope="session")
def smol_tokenizer(smol_path: Path) -> Any:
    return _tokenizer(smol_path)


@pytest.fixture(scope="session")
def qwen_tokenizer() -> Any:
    return _tokenizer(_prepared(QWEN))


@pytest.fixture(scope="session")
def llm(smol_path: Path) -> Any:
    require_core()
    from nanovllm import LLM

    return LLM(str(smol_path), dtype="float32", max_model_len=MAX_MODEL_LEN)


@pytest.fixture(autouse=True)
def _engine_left_clean(request: pytest.FixtureRequest) -> Any:
    """Whatever a test did, no request of ours may stay queued in the shared engine."""
    yield
    if "llm" in request.fixturenames:
        llm = request.getfixturevalue("llm")
        assert not llm.session.has_unfinished()
        assert llm.session.stats().num_running == 0
        assert llm.session.stats().num_waiting == 0
