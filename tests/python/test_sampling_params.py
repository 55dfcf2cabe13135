"""SamplingParams: engine defaults, validation messages, seeds per sample."""

from __future__ import annotations

import pytest
from conftest import require_core

require_core()

from nanovllm import SamplingParams, _core


def test_defaults_come_from_the_engine() -> None:
    core, params = _core.SamplingParams(), SamplingParams()
    for name in (
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "max_tokens",
        "min_tokens",
        "ignore_eos",
    ):
        assert getattr(params, name) == pytest.approx(getattr(core, name)), name
    assert params.seed is None and params.logprobs is None and params.stop is None
    assert params.n == 1 and params.skip_special_tokens and not params.include_stop_str_in_output


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"temperature": -1}, r"temperature = -1 is invalid: must be >= 0"),
        ({"top_p": 0}, r"top_p = 0 is invalid: must be in \(0, 1\]"),
        ({"top_k": -2}, r"top_k = -2 is invalid: must be >= 1, or -1 / 0 to disable"),
        ({"max_tokens": 0}, r"max_tokens = 0 is invalid: must be >= 1"),
        ({"min_p": 1.5}, r"min_p = 1.5 is invalid: must be in \[0, 1\]"),
        ({"n": 0}, r"n = 0 is invalid: must be >= 1"),
        ({"stop": [""]}, r"stop strings must not be empty"),
        ({"seed": -1}, r"seed = -1 is invalid: must be in \[0, 2\*\*64\)"),
        ({"logprobs": 21}, r"logprobs = 21 is invalid: must be between 0 and 20"),
        ({"logprobs": -1}, r"logprobs = -1 is invalid: use None for no logprobs"),
    ],
)
def test_invalid_values_say_what_is_allowed(changes: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        SamplingParams(**changes)


def test_a_field_changed_after_construction_is_still_validated() -> None:
    params = SamplingParams()
    params.temperature = -1
    with pytest.raises(ValueError, match="temperature"):
        params.to_core()


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        (
            {"stop": 5},
            r"stop = 5 has the wrong type: expected a string, a list of strings, or None",
        ),
        ({"stop": ["ok", 3]}, r"expected a string, a list of strings, or None"),
        ({"n": 1.5}, r"n = 1.5 has the wrong type: expected int"),
        ({"max_tokens": "many"}, r"max_tokens = 'many' has the wrong type: expected int"),
        ({"seed": "x"}, r"seed = 'x' has the wrong type"),
    ],
)
def test_wrong_types_are_type_errors_naming_the_field(changes: dict, pattern: str) -> None:
    with pytest.raises(TypeError, match=pattern):
        SamplingParams(**changes)


def test_samples_get_consecutive_seeds() -> None:
    params = SamplingParams(n=3, seed=7, temperature=0.8, stop_token_ids=[5], logprobs=0)
    cores = [params.to_core(i) for i in range(3)]
    assert [c.seed for c in cores] == [7, 8, 9]
    assert cores[0].stop_token_ids == [5] and cores[0].logprobs == 0
    assert SamplingParams().to_core().logprobs == -1
