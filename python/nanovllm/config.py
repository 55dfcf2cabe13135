"""Engine configuration under vLLM's keyword names.

The fields and defaults are those of the C++ ``nanovllm::EngineConfig`` (read from a
default ``_core.EngineConfig``, never restated here) and are validated there. Python adds
only ``tokenizer`` (another folder to load the tokenizer from) and ``seed`` (draws the
seeds of requests that bring none, so a whole run is reproducible).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ENGINE_ARG_HELP", "PYTHON_ARGS", "Config", "engine_defaults"]

# What each engine field means, for ``--help``. Fields without an entry still work.
ENGINE_ARG_HELP: dict[str, str] = {
    "dtype": 'weights and activations: "auto" (the checkpoint\'s), "float32", "bfloat16", "float16"',
    "device": '"cpu" or "cuda"',
    "quantization": 'weight-only quantization at load time: "" (none) or "int8"',
    "max_num_seqs": "most sequences in one engine step",
    "max_num_batched_tokens": "most tokens (prefill chunks + decodes) in one engine step",
    "max_model_len": "longest prompt + output per request; 0 = the model's own limit",
    "kvcache_block_size": "tokens per paged KV cache block",
    "num_kvcache_blocks": "KV cache size in blocks; -1 = size it from the memory budget",
    "kv_cache_memory": "CPU KV cache budget in bytes; 0 = the default budget",
    "gpu_memory_utilization": "share of GPU memory for weights + KV cache (CUDA)",
    "enable_prefix_caching": "reuse the KV cache of shared prompt prefixes",
    "enforce_eager": "disable CUDA graphs (no effect on the CPU)",
    "tensor_parallel_size": "number of devices (only 1 is supported)",
    "num_threads": "intra-op threads of the CPU runner; 0 = all cores",
}

# Keywords LLM() takes besides the engine's fields.
PYTHON_ARGS: dict[str, str] = {
    "tokenizer": "tokenizer folder, when not the model's",
    "seed": "seed for the requests that set none (reproducible runs)",
}


@functools.cache
def engine_defaults() -> dict[str, Any]:
    """Every ``_core.EngineConfig`` field the user may set (all but ``model``) -> default."""
    from nanovllm import _core

    core = _core.EngineConfig()
    return {
        name: getattr(core, name)
        for name in dir(core)
        if not name.startswith("_") and name != "model" and not callable(getattr(core, name))
    }


@dataclass
class Config:
    """What ``LLM(...)`` was asked for: a model, Python-side options, engine overrides."""

    model: str
    tokenizer: str | None = None
    seed: int | None = None
    engine: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_kwargs(cls, model: str, **kwargs: Any) -> Config:
        """Splits ``LLM`` keywords; an unknown one raises TypeError listing the allowed."""
        allowed = [*engine_defaults(), *PYTHON_ARGS]
        unknown = [name for name in kwargs if name not in allowed]
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(
                f"LLM() got an unexpected keyword argument {name!r}{hint}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        seed = kwargs.pop("seed", None)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed = {seed!r} is invalid: must be an integer >= 0, or None")
        tokenizer = kwargs.pop("tokenizer", None)
        return cls(
            model=model,
            tokenizer=None if tokenizer is None else str(tokenizer),
            seed=seed,
            engine=kwargs,
        )

    def to_core(self, model_path: str = "") -> Any:
        """A validated ``_core.EngineConfig`` (ValueError naming the field otherwise)."""
        from nanovllm import _core

        core = _core.EngineConfig()
        core.model = model_path
        for name, value in self.engine.items():
            try:
                setattr(core, name, value)
            except TypeError:
                expected = type(getattr(core, name)).__name__
                raise TypeError(
                    f"{name} = {value!r} has the wrong type: expected {expected}"
                ) from None
        core.validate()
        return core
