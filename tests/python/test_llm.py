"""LLM.generate end to end on SmolLM2-135M (float32, greedy unless a test samples)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import require_core

require_core()

from nanovllm import LLM, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=12)
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "1, 2, 3, 4,",
]


@pytest.fixture(scope="module")
def solo(llm: Any) -> list[str]:
    """Each prompt's greedy text, generated alone."""
    return [llm.generate(p, GREEDY, use_tqdm=False)[0].outputs[0].text for p in PROMPTS]


def test_results_come_back_in_prompt_order(llm: Any, solo: list[str]) -> None:
    # Different lengths finish at different steps; the order must still be the prompts'.
    params = [GREEDY.clone(max_tokens=m) for m in (12, 3, 7, 1)]
    outputs = llm.generate(PROMPTS, params, use_tqdm=False)
    assert [o.prompt for o in outputs] == PROMPTS
    assert [o.request_id for o in outputs] == ["0", "1", "2", "3"]
    for out, expected, p in zip(outputs, solo, params):
        completion = out.outputs[0]
        assert len(completion.token_ids) == p.max_tokens
        assert completion.finish_reason == "length"
        assert expected.startswith(completion.text)
    assert outputs[0].outputs[0].text == solo[0]


def test_batch_equals_one_by_one(llm: Any, solo: list[str]) -> None:
    outputs = llm.generate(PROMPTS, GREEDY, use_tqdm=False)
    assert [o.outputs[0].text for o in outputs] == solo


def test_token_id_prompts(llm: Any, solo: list[str]) -> None:
    ids = llm.get_tokenizer().encode(PROMPTS[0])
    single = llm.generate(ids, GREEDY, use_tqdm=False)
    several = llm.generate([ids, {"prompt_token_ids": ids}], GREEDY, use_tqdm=False)
    assert len(single) == 1 and len(several) == 2
    for out in [*single, *several]:
        assert out.prompt is None and out.prompt_token_ids == ids
        assert out.outputs[0].text == solo[0]


def test_n_samples_per_prompt(llm: Any) -> None:
    params = SamplingParams(n=3, temperature=1.0, seed=1, max_tokens=8, ignore_eos=True)
    outputs = llm.generate(PROMPTS[:2], params, use_tqdm=False)
    for out in outputs:
        assert [c.index for c in out.outputs] == [0, 1, 2]
        assert all(len(c.token_ids) == 8 for c in out.outputs)
        # seeds 1, 2, 3: the samples differ from each other.
        assert len({tuple(c.token_ids) for c in out.outputs}) > 1


def test_per_prompt_params(llm: Any, solo: list[str]) -> None:
    params = [
        GREEDY.clone(max_tokens=2),
        SamplingParams(temperature=0.7, seed=3, max_tokens=5, ignore_eos=True),
    ]
    first, second = llm.generate(PROMPTS[:2], params, use_tqdm=False)
    assert len(first.outputs[0].token_ids) == 2 and solo[0].startswith(first.outputs[0].text)
    assert len(second.outputs[0].token_ids) == 5


def test_logprobs_shape(llm: Any) -> None:
    top = llm.generate(PROMPTS[0], GREEDY.clone(logprobs=3, max_tokens=5), use_tqdm=False)[
        0
    ].outputs[0]
    assert top.logprobs is not None and len(top.logprobs) == len(top.token_ids) == 5
    for token_id, candidates in zip(top.token_ids, top.logprobs):
        assert token_id in candidates
        # Greedy: the sampled token is the most likely one.
        assert candidates[token_id].rank == 1
        assert 3 <= len(candidates) <= 4
        assert all(c.logprob <= 0 for c in candidates.values())
        ranked = sorted(c.rank for c in candidates.values() if c.rank is not None)
        assert ranked == [1, 2, 3]
    assert top.cumulative_logprob == pytest.approx(
        sum(lp[t].logprob for t, lp in zip(top.token_ids, top.logprobs))
    )

    sampled_only = llm.generate(PROMPTS[0], GREEDY.clone(logprobs=0, max_tokens=5), use_tqdm=False)[
        0
    ].outputs[0]
    assert sampled_only.logprobs is not None
    assert [list(c) for c in sampled_only.logprobs] == [[t] for t in sampled_only.token_ids]

    plain = llm.generate(PROMPTS[0], GREEDY, use_tqdm=False)[0].outputs[0]
    assert plain.logprobs is None and plain.cumulative_logprob is None


def test_eos_stops_with_reason_stop_and_no_eos_text(llm: Any) -> None:
    messages = [{"role": "user", "content": "Say just the word: yes"}]
    out = llm.chat(messages, SamplingParams(temperature=0, max_tokens=64), use_tqdm=False)[
        0
    ].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason is None
    assert out.token_ids[-1] in llm.engine.model_info.eos_token_ids
    assert "<|im_end|>" not in out.text


def test_stop_token_ids(llm: Any, solo: list[str]) -> None:
    tokenizer = llm.get_tokenizer()
    full = llm.generate(PROMPTS[2], GREEDY, use_tqdm=False)[0].outputs[0]
    stop_id = full.token_ids[4]
    out = llm.generate(PROMPTS[2], GREEDY.clone(stop_token_ids=[stop_id]), use_tqdm=False)[
        0
    ].outputs[0]
    cut = full.token_ids.index(stop_id)
    assert out.token_ids == full.token_ids[: cut + 1]
    assert out.finish_reason == "stop" and out.stop_reason == stop_id
    assert out.text == tokenizer.decode(full.token_ids[:cut])


# ---------------------------------------------------------------------------- errors


def test_unknown_keyword_lists_the_allowed_ones(smol_path: Any) -> None:
    with pytest.raises(
        TypeError,
        match=r"unexpected keyword argument 'max_num_seq'.*max_num_seqs.*allowed: .*dtype",
    ):
        LLM(str(smol_path), max_num_seq=4)


def test_invalid_engine_value_is_a_value_error(smol_path: Any) -> None:
    with pytest.raises(ValueError, match=r"max_num_seqs = 0 is invalid: must be >= 1"):
        LLM(str(smol_path), max_num_seqs=0)
    with pytest.raises(ValueError, match=r"dtype"):
        LLM(str(smol_path), dtype="float8")


def test_too_long_prompt_queues_nothing(llm: Any) -> None:
    too_long = [1] * (llm.max_model_len + 1)
    with pytest.raises(ValueError, match=r"^prompt 1: .*max_model_len"):
        llm.generate([PROMPTS[0], too_long, PROMPTS[1]], GREEDY, use_tqdm=False)
    assert not llm.session.has_unfinished()
    assert llm.session.stats().num_waiting == 0 and llm.session.stats().num_running == 0


def test_params_list_length_must_match(llm: Any) -> None:
    with pytest.raises(ValueError, match=r"got 1 SamplingParams for 2 prompts"):
        llm.generate(PROMPTS[:2], [GREEDY], use_tqdm=False)


def test_bad_prompt_type(llm: Any) -> None:
    with pytest.raises(TypeError, match="prompts must be"):
        llm.generate(3.5, GREEDY, use_tqdm=False)  # type: ignore[arg-type]
