"""``_core.EngineLoop``, the threaded engine under the server, driven straight from Python."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import MAX_MODEL_LEN, require_core
from nanovllm import SamplingParams


def test_engine_loop_streams_validates_and_shuts_down(smol_path: Path, llm: Any) -> None:
    require_core()
    from nanovllm import _core
    from nanovllm.config import Config

    config = Config.from_kwargs(str(smol_path), dtype="float32", max_model_len=MAX_MODEL_LEN)
    loop = _core.EngineLoop(config.to_core(str(smol_path)), max_pending=4)
    assert loop.max_model_len == MAX_MODEL_LEN and loop.error == ""
    prompt = llm.get_tokenizer()("The capital of France is")["input_ids"]
    params = SamplingParams(temperature=0.0, max_tokens=12)
    expected = llm.generate([prompt], params, use_tqdm=False)[0].outputs[0]

    request_id = loop.submit(prompt, params.to_core())
    tokens: list[int] = []
    finals = []
    while not finals:
        for out in loop.get(request_id, 10.0):
            assert out.request_id == request_id
            tokens += out.new_token_ids
            if out.finished:
                finals.append(out.finish_reason)
    assert tokens == expected.token_ids and finals == [expected.finish_reason]
    with pytest.raises(IndexError):
        loop.get(request_id, 0.0)  # its final output was taken: forgotten
    assert loop.stats().num_free_blocks == loop.stats().num_kvcache_blocks

    with pytest.raises(ValueError, match="max_model_len"):
        loop.submit(prompt, SamplingParams(max_tokens=MAX_MODEL_LEN).to_core())
    with pytest.raises(ValueError, match="empty"):
        loop.submit([], params.to_core())

    # Shutdown ends a running request with "abort", and nothing is accepted afterwards.
    running = loop.submit(prompt, SamplingParams(max_tokens=500, ignore_eos=True).to_core())
    loop.shutdown()
    outputs = loop.poll(0.0)
    assert [o.finish_reason for o in outputs if o.finished] == ["abort"]
    assert {o.request_id for o in outputs} == {running}
    with pytest.raises(_core.EngineStoppedError):
        loop.submit(prompt, params.to_core())
    assert issubclass(_core.QueueFullError, RuntimeError)
