"""``nanovllm serve`` as clients see it: the official ``openai`` package against a real
server (a subprocess on 127.0.0.1, SmolLM2 in float32), compared with offline ``LLM``."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import MAX_MODEL_LEN, require_core
from nanovllm import SamplingParams

SERVED_NAME = "smol"
API_KEY = "test-key"
PROMPTS = ["The capital of France is", "Once upon a time, a small robot"]


class Server:
    """``python -m nanovllm serve ...`` on a free port, ready once /health answers."""

    def __init__(self, model: Path, *extra: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: list[str] = []
        args = ["--model", str(model), "--served-model-name", SERVED_NAME, "--port", str(self.port)]
        args += [
            "--dtype",
            "float32",
            "--max-model-len",
            str(MAX_MODEL_LEN),
            "--log-level",
            "warning",
        ]
        env = {k: v for k, v in os.environ.items() if k != "NANOVLLM_API_KEY"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nanovllm", "serve", *args, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        self._wait_ready(deadline=time.monotonic() + 300)

    def _read_log(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line)

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the reader thread catch the last lines
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}:\n{''.join(self.log)}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not get ready:\n{''.join(self.log)}")

    def client(self, api_key: str = "unused", **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kwargs)

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics").text
        return {
            name: float(value)
            for line in text.splitlines()
            if line and not line.startswith("#")
            for name, value in [line.rsplit(" ", 1)]
        }

    def wait_idle(self, timeout: float = 30) -> dict[str, float]:
        """Metrics once nothing runs or waits (aborts land a step after the disconnect)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            idle = (
                m["nanovllm:num_requests_running"] == 0 and m["nanovllm:num_requests_waiting"] == 0
            )
            if idle and m["nanovllm:num_free_kvcache_blocks"] == m["nanovllm:num_kvcache_blocks"]:
                return m
            assert time.monotonic() < deadline, f"the engine did not go idle: {m}"
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def server(smol_path: Path) -> Iterator[Server]:
    require_core()
    s = Server(smol_path)
    yield s
    s.stop()
    assert s.process.returncode == 0, "".join(s.log)


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return server.client()


def greedy(max_tokens: int, **kwargs: Any) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kwargs)


def offline_text(llm: Any, prompt: str, params: SamplingParams) -> list[str]:
    return [o.text for o in llm.generate([prompt], params, use_tqdm=False)[0].outputs]


# ------------------------------------------------------------------ completions


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [SERVED_NAME]


def test_completions_match_offline_greedy_generation(client: openai.OpenAI, llm: Any) -> None:
    result = client.completions.create(
        model=SERVED_NAME, prompt=PROMPTS, max_tokens=24, temperature=0
    )
    expected = [o.outputs[0] for o in llm.generate(PROMPTS, greedy(24), use_tqdm=False)]
    assert [c.index for c in result.choices] == [0, 1]
    assert [c.text for c in result.choices] == [o.text for o in expected]
    assert [c.finish_reason for c in result.choices] == [o.finish_reason for o in expected]
    prompt_tokens = sum(len(llm.get_tokenizer()(p)["input_ids"]) for p in PROMPTS)
    assert result.usage.prompt_tokens == prompt_tokens
    assert result.usage.completion_tokens == sum(len(o.token_ids) for o in expected)
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_token_id_prompts_are_accepted(client: openai.OpenAI, llm: Any) -> None:
    ids = llm.get_tokenizer()(PROMPTS[0])["input_ids"]
    by_ids = client.completions.create(model=SERVED_NAME, prompt=ids, max_tokens=8, temperature=0)
    by_text = client.completions.create(
        model=SERVED_NAME, prompt=PROMPTS[0], max_tokens=8, temperature=0
    )
    assert by_ids.choices[0].text == by_text.choices[0].text


def test_streamed_completion_joins_to_the_non_streamed_text(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": SERVED_NAME,
        "prompt": PROMPTS[1],
        "max_tokens": 40,
        "temperature": 0,
    }
    whole = client.completions.create(**kwargs)
    chunks = list(
        client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    )
    text_chunks = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].text for c in text_chunks) == whole.choices[0].text
    assert text_chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
    # The usage comes last, in a chunk of its own.
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_n_samples_with_a_seed_are_reproducible(client: openai.OpenAI, llm: Any) -> None:
    kwargs: dict[str, Any] = {"model": SERVED_NAME, "prompt": PROMPTS[1], "max_tokens": 16}
    first = client.completions.create(**kwargs, n=3, temperature=1.0, seed=1234)
    again = client.completions.create(**kwargs, n=3, temperature=1.0, seed=1234)
    texts = [c.text for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.text for c in again.choices] == texts
    assert len(set(texts)) > 1, "sample i is seeded with seed + i, so samples differ"
    assert texts == offline_text(
        llm, PROMPTS[1], SamplingParams(n=3, temperature=1.0, seed=1234, max_tokens=16)
    )


def test_stop_strings_end_the_text_like_offline(client: openai.OpenAI, llm: Any) -> None:
    prompt = "List three colors:"
    # A word the model does write, so the stop string is met.
    stop = offline_text(llm, prompt, greedy(40))[0].split()[2]
    for include in (False, True):
        kwargs: dict[str, Any] = {
            "model": SERVED_NAME,
            "prompt": prompt,
            "max_tokens": 40,
            "temperature": 0,
            "stop": [stop],
            "extra_body": {"include_stop_str_in_output": include},
        }
        choice = client.completions.create(**kwargs).choices[0]
        assert choice.finish_reason == "stop"
        assert (
            choice.text
            == offline_text(
                llm, prompt, greedy(40, stop=[stop], include_stop_str_in_output=include)
            )[0]
        )
        assert choice.text.endswith(stop) if include else stop not in choice.text
        assert (
            "".join(c.choices[0].text for c in client.completions.create(**kwargs, stream=True))
            == choice.text
        )


def test_completion_logprobs(client: openai.OpenAI) -> None:
    result = client.completions.create(
        model=SERVED_NAME, prompt=PROMPTS[0], max_tokens=8, temperature=0, logprobs=3
    )
    logprobs = result.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == result.usage.completion_tokens
    assert all(lp <= 0.0 for lp in logprobs.token_logprobs)
    # Greedy: the sampled token is the most likely one, so it heads its top 3.
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
        assert len(top) >= 3
        assert max(top.values()) == pytest.approx(logprob)
        assert top[token] == pytest.approx(logprob)
    assert logprobs.text_offset[0] == 0
    assert "".join(logprobs.tokens).startswith(result.choices[0].text)


# ------------------------------------------------------------------------- chat

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_matches_offline_chat(client: openai.OpenAI, llm: Any) -> None:
    result = client.chat.completions.create(
        model=SERVED_NAME, messages=MESSAGES, max_tokens=32, temperature=0
    )
    expected = llm.chat(MESSAGES, greedy(32), use_tqdm=False)[0]
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].message.content == expected.outputs[0].text
    assert result.choices[0].finish_reason == expected.outputs[0].finish_reason
    assert result.usage.prompt_tokens == len(expected.prompt_token_ids)


def test_streamed_chat_joins_to_the_non_streamed_message(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": SERVED_NAME,
        "messages": MESSAGES,
        "max_completion_tokens": 32,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks)
        == whole.choices[0].message.content
    )
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_chat_logprobs(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=SERVED_NAME,
        messages=MESSAGES,
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    content = result.choices[0].logprobs.content
    assert len(content) == result.usage.completion_tokens
    for entry in content:
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].token == entry.token
        assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token


# ------------------------------------------------------------------------ errors


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_malformed_json_is_a_400(server: Server) -> None:
    response = httpx.post(
        f"{server.url}/v1/completions",
        content=b'{"prompt": "x", ',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["error"]["message"]


def test_bad_parameters_are_400s_naming_the_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad_temperature:
        client.completions.create(model=SERVED_NAME, prompt="x", temperature=-1)
    assert _error(bad_temperature.value)["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as bad_type:
        client.chat.completions.create(model=SERVED_NAME, messages=MESSAGES, max_tokens="many")  # type: ignore[arg-type]
    assert _error(bad_type.value)["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.completions.create(model=SERVED_NAME, prompt="x", extra_body={"temprature": 0})
    assert _error(unknown.value)["param"] == "temprature"


def test_a_prompt_over_the_context_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model=SERVED_NAME, prompt="hello " * MAX_MODEL_LEN, max_tokens=1)
    assert "max_model_len" in _error(too_long.value)["message"]


def test_an_unknown_model_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="gpt-4", prompt="x")
    assert _error(missing.value)["code"] == "model_not_found"


# ---------------------------------------------------------- tokenize and metrics


def test_tokenize_round_trip(server: Server, llm: Any) -> None:
    text = "Hello, world! Ünïcödé and emoji 🙂."
    tokens = httpx.post(f"{server.url}/tokenize", json={"prompt": text}).json()
    assert tokens["tokens"] == llm.get_tokenizer()(text)["input_ids"]
    assert tokens["count"] == len(tokens["tokens"]) and tokens["max_model_len"] == MAX_MODEL_LEN
    back = httpx.post(f"{server.url}/detokenize", json={"tokens": tokens["tokens"]}).json()
    assert back["prompt"] == text
    chat = httpx.post(f"{server.url}/tokenize", json={"messages": MESSAGES}).json()
    assert chat["tokens"] == llm.get_tokenizer().encode(
        llm.apply_chat_template(MESSAGES), add_special_tokens=False
    )


def test_metrics_count_what_was_served(server: Server, client: openai.OpenAI) -> None:
    before = server.wait_idle()
    result = client.completions.create(
        model=SERVED_NAME, prompt=PROMPTS[0], max_tokens=5, temperature=0, n=2
    )
    after = server.wait_idle()

    def delta(name: str) -> float:
        return after[name] - before[name]

    finished = sum(
        delta(f'nanovllm:request_success_total{{finished_reason="{r}"}}')
        for r in ("stop", "length")
    )
    assert finished == 2
    assert delta("nanovllm:prompt_tokens_total") == 2 * result.usage.prompt_tokens
    assert delta("nanovllm:generation_tokens_total") == result.usage.completion_tokens
    assert delta("nanovllm:time_to_first_token_seconds_count") == 2
    assert delta("nanovllm:e2e_request_latency_seconds_count") == 2
    assert after["nanovllm:kv_cache_usage_perc"] == 0.0
    assert 0.0 <= after["nanovllm:prefix_cache_hit_rate"] <= 1.0


# ------------------------------------------- api key, full queue, disconnects


@pytest.fixture(scope="module")
def guarded_server(smol_path: Path) -> Iterator[Server]:
    """One sequence at a time, one more may wait, an API key."""
    require_core()
    s = Server(smol_path, "--api-key", API_KEY, "--max-num-seqs", "1", "--max-pending", "1")
    yield s
    s.stop()


def test_the_api_key_is_required(guarded_server: Server) -> None:
    with pytest.raises(openai.AuthenticationError) as denied:
        guarded_server.client(api_key="wrong").models.list()
    assert _error(denied.value)["code"] == "invalid_api_key"
    assert (
        httpx.post(f"{guarded_server.url}/v1/completions", json={"prompt": "x"}).status_code == 401
    )
    assert [m.id for m in guarded_server.client(api_key=API_KEY).models.list().data] == [
        SERVED_NAME
    ]
    assert httpx.get(f"{guarded_server.url}/health").status_code == 200


def test_a_full_queue_is_a_503_and_a_disconnect_frees_the_engine(guarded_server: Server) -> None:
    client = guarded_server.client(api_key=API_KEY)
    before = guarded_server.wait_idle()
    long = {
        "model": SERVED_NAME,
        "prompt": PROMPTS[1],
        "max_tokens": 900,
        "temperature": 0,
        "extra_body": {"ignore_eos": True},
    }
    running = client.completions.create(**long, stream=True)
    next(iter(running))  # it runs; the engine has room for no other

    waiting_result: list[Any] = []
    waiter = threading.Thread(
        target=lambda: waiting_result.append(
            client.completions.create(model=SERVED_NAME, prompt="Hi", max_tokens=4)
        )
    )
    waiter.start()
    deadline = time.monotonic() + 30
    while guarded_server.metrics()["nanovllm:num_requests_waiting"] < 1:
        assert time.monotonic() < deadline, "the second request never queued"
        time.sleep(0.05)

    with pytest.raises(openai.APIStatusError) as full:
        client.completions.create(model=SERVED_NAME, prompt="Hi", max_tokens=4)
    assert full.value.status_code == 503
    assert full.value.response.headers["retry-after"] == "1"
    assert _error(full.value)["code"] == "queue_full"

    # Leaving the stream aborts the running request, which lets the waiting one through.
    running.close()
    waiter.join(timeout=60)
    assert waiting_result and waiting_result[0].choices[0].finish_reason in ("stop", "length")
    after = guarded_server.wait_idle()
    assert after['nanovllm:request_success_total{finished_reason="abort"}'] == (
        before['nanovllm:request_success_total{finished_reason="abort"}'] + 1
    )


def test_a_non_streaming_client_that_leaves_has_its_request_aborted(guarded_server: Server) -> None:
    before = guarded_server.wait_idle()
    body = {"prompt": PROMPTS[0], "max_tokens": 900, "temperature": 0, "ignore_eos": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{guarded_server.url}/v1/completions", json=body, headers=headers, timeout=1.0)
    after = guarded_server.wait_idle()
    assert (
        after["nanovllm:generation_tokens_total"] - before["nanovllm:generation_tokens_total"] < 900
    )
    assert after['nanovllm:request_success_total{finished_reason="abort"}'] == (
        before['nanovllm:request_success_total{finished_reason="abort"}'] + 1
    )


# ------------------------------------------------------------------ under load


@pytest.mark.slow
def test_64_streaming_clients_some_leaving_mid_stream(server: Server, llm: Any) -> None:
    """64 concurrent greedy streams, a quarter leaving at seeded points: every stream that
    stays gets exactly the offline text, none is lost, and the engine ends up idle with
    every KV block free and metrics that add up."""
    rng = random.Random(0)
    num_clients, max_tokens = 64, 32
    topics = ["city", "river", "painter", "scientist"]
    prompts = [f"Question {i}: name a famous {rng.choice(topics)}." for i in range(num_clients)]
    leave_after = {
        i: rng.randint(1, max_tokens - 4) for i in rng.sample(range(num_clients), num_clients // 4)
    }
    expected = [o.outputs[0] for o in llm.generate(prompts, greedy(max_tokens), use_tqdm=False)]
    prompt_tokens = sum(len(llm.get_tokenizer()(p)["input_ids"]) for p in prompts)
    before = server.wait_idle()

    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[str, str | None]:
        stream = await client.completions.create(
            model=SERVED_NAME, prompt=prompts[i], max_tokens=max_tokens, temperature=0, stream=True
        )
        text, reason, chunks = "", None, 0
        async for chunk in stream:
            chunks += 1
            text += chunk.choices[0].text
            reason = chunk.choices[0].finish_reason
            if chunks == leave_after.get(i):
                await stream.close()
                break
        return text, reason

    async def run_all() -> list[tuple[str, str | None]]:
        async with openai.AsyncOpenAI(
            base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120
        ) as client:
            return await asyncio.wait_for(
                asyncio.gather(*(one(client, i) for i in range(num_clients))), timeout=300
            )

    results = asyncio.run(run_all())
    for i, (text, reason) in enumerate(results):
        if i in leave_after:
            assert expected[i].text.startswith(text), (
                f"client {i} got text that is not a prefix of the offline text"
            )
        else:
            assert (text, reason) == (expected[i].text, expected[i].finish_reason), f"client {i}"

    after = server.wait_idle(timeout=60)

    def delta(name: str) -> float:
        return after[name] - before[name]

    reasons = {
        r: delta(f'nanovllm:request_success_total{{finished_reason="{r}"}}')
        for r in ("stop", "length", "abort")
    }
    assert sum(reasons.values()) == num_clients, reasons
    assert 1 <= reasons["abort"] <= len(leave_after)
    assert delta("nanovllm:prompt_tokens_total") == prompt_tokens
    assert delta("nanovllm:time_to_first_token_seconds_count") == num_clients
    stayed_tokens = sum(len(o.token_ids) for i, o in enumerate(expected) if i not in leave_after)
    assert stayed_tokens <= delta("nanovllm:generation_tokens_total") <= num_clients * max_tokens
