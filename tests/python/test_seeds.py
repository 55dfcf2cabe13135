"""Seeds make sampling reproducible whatever else is in the batch."""

from __future__ import annotations

from typing import Any

from conftest import require_core

require_core()

from nanovllm import SamplingParams

PROMPT = "My favourite animal is"
OTHERS = ["The weather today", "import numpy as np\n"]


def _text(outputs: list[Any], position: int = 0) -> str:
    return outputs[position].outputs[0].text


def test_same_seed_same_text_across_batch_compositions(llm: Any) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, max_tokens=8)
    noise = SamplingParams(temperature=1.0, max_tokens=10)
    alone = _text(llm.generate(PROMPT, params, use_tqdm=False))
    first = llm.generate([PROMPT, *OTHERS], [params, noise, noise], use_tqdm=False)
    last = llm.generate([*OTHERS, PROMPT], [noise, noise, params], use_tqdm=False)
    assert _text(first) == alone == _text(last, 2)


def test_different_seeds_usually_differ(llm: Any) -> None:
    texts = {
        _text(
            llm.generate(
                PROMPT, SamplingParams(temperature=1.0, seed=seed, max_tokens=8), use_tqdm=False
            )
        )
        for seed in range(4)
    }
    assert len(texts) >= 3


def test_n_samples_reproduce_with_their_seeds(llm: Any) -> None:
    grouped = llm.generate(
        PROMPT, SamplingParams(n=3, temperature=1.0, seed=40, max_tokens=8), use_tqdm=False
    )
    alone = [
        _text(
            llm.generate(
                PROMPT, SamplingParams(temperature=1.0, seed=40 + i, max_tokens=8), use_tqdm=False
            )
        )
        for i in range(3)
    ]
    assert [c.text for c in grouped[0].outputs] == alone


def test_session_seed_reproduces_unseeded_requests(llm: Any) -> None:
    """LLM(seed=...) draws each unseeded request's seed from one generator."""
    from nanovllm import EngineSession

    ids = llm.get_tokenizer().encode(PROMPT)
    params = SamplingParams(temperature=1.0, max_tokens=8)

    def run(seed: int) -> list[str]:
        session = EngineSession(llm.engine, llm.get_tokenizer(), seed=seed)
        first, second = session.add_request(ids, params), session.add_request(ids, params)
        texts = {first: "", second: ""}
        while session.has_unfinished():
            for delta in session.step():
                texts[delta.request_id] += delta.text
        return [texts[first], texts[second]]

    assert run(0) == run(0)
    assert run(0) != run(1)
