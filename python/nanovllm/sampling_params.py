"""Per-request sampling parameters, with vLLM's names and meanings.

The engine's fields and their defaults are defined once, in C++
(``cpp/include/nanovllm/sampling_params.h``), and validated there; this dataclass reads
its defaults from a default ``_core.SamplingParams`` and adds only what the engine never
sees: ``n``, stop strings and detokenization switches, which Python handles.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SamplingParams"]

# Fields that go to the engine unchanged.
_ENGINE_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "max_tokens",
    "min_tokens",
    "stop_token_ids",
    "ignore_eos",
)
# The engine's "no logprobs" value; Python spells it None, as vLLM does.
_CORE_NO_LOGPROBS = -1


@functools.cache
def _core_defaults() -> dict[str, Any]:
    # Plain values, not the core object: nanobind reports instances alive at exit as leaks.
    from nanovllm import _core

    core = _core.SamplingParams()
    return {name: getattr(core, name) for name in (*_ENGINE_FIELDS, "logprobs")}


def _engine_default(name: str) -> Callable[[], Any]:
    """A default factory reading field ``name`` of a default ``_core.SamplingParams``."""

    def factory() -> Any:
        value = _core_defaults()[name]
        return list(value) if isinstance(value, list) else value

    return factory


def _logprobs_default() -> int | None:
    value = _core_defaults()["logprobs"]
    return None if value == _CORE_NO_LOGPROBS else value


@dataclass
class SamplingParams:
    """How to sample one request.

    Engine fields (defaults come from the C++ engine): ``temperature`` (0 = greedy),
    ``top_p``, ``top_k`` (-1 or 0 = off), ``min_p``, ``repetition_penalty``,
    ``presence_penalty``, ``frequency_penalty``, ``seed`` (None = the engine draws one),
    ``max_tokens``, ``min_tokens``, ``stop_token_ids``, ``ignore_eos``, ``logprobs``
    (None = none, 0 = the sampled token's, N = also the top N).

    Python fields: ``n`` samples per prompt (with a seed, sample i uses ``seed + i``);
    ``stop`` strings that end the output; ``skip_special_tokens`` when detokenizing;
    ``include_stop_str_in_output`` keeps the matched stop string (or stop token's text).

    An invalid value raises ValueError (a wrong type TypeError) naming the field and what
    is allowed, at construction and again whenever the params are used, so changing a
    field afterwards cannot smuggle a bad value into the engine.
    """

    n: int = 1
    temperature: float = field(default_factory=_engine_default("temperature"))
    top_p: float = field(default_factory=_engine_default("top_p"))
    top_k: int = field(default_factory=_engine_default("top_k"))
    min_p: float = field(default_factory=_engine_default("min_p"))
    repetition_penalty: float = field(default_factory=_engine_default("repetition_penalty"))
    presence_penalty: float = field(default_factory=_engine_default("presence_penalty"))
    frequency_penalty: float = field(default_factory=_engine_default("frequency_penalty"))
    seed: int | None = field(default_factory=_engine_default("seed"))
    max_tokens: int = field(default_factory=_engine_default("max_tokens"))
    min_tokens: int = field(default_factory=_engine_default("min_tokens"))
    stop: str | list[str] | None = None
    stop_token_ids: list[int] = field(default_factory=_engine_default("stop_token_ids"))
    ignore_eos: bool = field(default_factory=_engine_default("ignore_eos"))
    logprobs: int | None = field(default_factory=_logprobs_default)
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        self.validate()

    @property
    def stop_strings(self) -> list[str]:
        """``stop`` as a list (empty when unset)."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def validate(self) -> None:
        """Raise ValueError (TypeError for a wrong type) naming the field and what is allowed."""
        self._validate_python_fields()
        self.to_core()

    def to_core(self, sample_index: int = 0) -> Any:
        """The engine's ``_core.SamplingParams`` for sample ``sample_index`` (of ``n``).

        With a seed, sample i gets ``seed + i``, so samples differ yet are reproducible.
        Validated by the engine's own rules (ValueError).
        """
        from nanovllm import _core

        core = _core.SamplingParams()
        for name in _ENGINE_FIELDS:
            value = getattr(self, name)
            if name == "seed" and value is not None:
                value = (_seed(value) + sample_index) % 2**64
            _assign(core, name, value)
        _assign(core, "logprobs", _CORE_NO_LOGPROBS if self.logprobs is None else self.logprobs)
        core.validate()
        return core

    def clone(self, **changes: Any) -> SamplingParams:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def _validate_python_fields(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int):
            raise TypeError(f"n = {self.n!r} has the wrong type: expected int")
        if self.n < 1:
            raise ValueError(f"n = {self.n} is invalid: must be >= 1 (samples per prompt)")
        if not _is_stop(self.stop):
            raise TypeError(
                f"stop = {self.stop!r} has the wrong type: expected a string, a list of strings, "
                "or None"
            )
        if "" in self.stop_strings:
            raise ValueError(f"stop = {self.stop!r} is invalid: stop strings must not be empty")
        for name in ("skip_special_tokens", "include_stop_str_in_output"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(
                    f"{name} = {getattr(self, name)!r} has the wrong type: expected bool"
                )
        if self.seed is not None:
            _seed(self.seed)
        if isinstance(self.logprobs, int) and self.logprobs < 0:
            raise ValueError(
                f"logprobs = {self.logprobs} is invalid: use None for no logprobs, 0 for the "
                "sampled token's, or N for the top N as well"
            )


def _is_stop(value: Any) -> bool:
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value)


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"seed = {value!r} has the wrong type: expected int or None")
    if not 0 <= value < 2**64:
        raise ValueError(f"seed = {value} is invalid: must be in [0, 2**64), or None")
    return value


def _assign(core: Any, name: str, value: Any) -> None:
    try:
        setattr(core, name, value)
    except TypeError:
        expected = type(getattr(core, name)).__name__
        raise TypeError(
            f"SamplingParams.{name} = {value!r} has the wrong type: expected {expected}"
        ) from None
