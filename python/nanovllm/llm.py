"""``LLM``: the offline entry point, shaped like vLLM's.

>>> from nanovllm import LLM, SamplingParams
>>> llm = LLM("SmolLM2-135M-Instruct")
>>> out = llm.generate(["Hello, my name is"], SamplingParams(temperature=0, max_tokens=16))
>>> print(out[0].outputs[0].text)
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nanovllm.builtin_models import DEFAULT_MODEL, resolve_model
from nanovllm.config import Config
from nanovllm.inputs import (
    Conversation,
    PromptInput,
    is_conversation,
    normalize_conversations,
    normalize_prompts,
)
from nanovllm.outputs import CompletionOutput, RequestOutput, StreamDelta
from nanovllm.progress import GenerationProgress
from nanovllm.sampling_params import SamplingParams
from nanovllm.session import EngineSession

__all__ = ["LLM"]

ParamsInput = SamplingParams | Sequence[SamplingParams] | None


@dataclass
class _Job:
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams


class LLM:
    """A model loaded into the engine, with its tokenizer.

    ``model`` is a Hugging Face folder or a built-in model name (prepared on first use).
    Keywords use vLLM's names: ``dtype``, ``device``, ``quantization``, ``max_num_seqs``,
    ``max_num_batched_tokens``, ``max_model_len``, ``kvcache_block_size``,
    ``num_kvcache_blocks``, ``kv_cache_memory``, ``gpu_memory_utilization``,
    ``enable_prefix_caching``, ``enforce_eager``, ``tensor_parallel_size``, ``num_threads``,
    plus ``tokenizer`` (another tokenizer folder) and ``seed`` (for requests without one).
    Unset keywords keep the engine's defaults. An unknown keyword raises TypeError, an
    invalid value ValueError.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        dtype: str = "auto",
        **engine_kwargs: Any,
    ):
        from transformers import AutoTokenizer

        from nanovllm import _core

        self.config = Config.from_kwargs(os.fspath(model), dtype=dtype, **engine_kwargs)
        self.config.to_core()  # fail on bad values before a (possibly long) model preparation
        self.model_path: Path = resolve_model(model)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(
            self.config.tokenizer or str(self.model_path)
        )
        self.engine: Any = _core.LLMEngine(self.config.to_core(str(self.model_path)))
        self.session = EngineSession(self.engine, self.tokenizer, seed=self.config.seed)
        self._calls = itertools.count()

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    @property
    def max_model_len(self) -> int:
        return int(self.engine.max_model_len)

    def generate(
        self,
        prompts: PromptInput | Sequence[PromptInput],
        sampling_params: ParamsInput = None,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        """Completes each prompt; one ``RequestOutput`` per prompt, in prompt order.

        ``prompts``: a string, a list of token ids, vLLM's ``{"prompt": ...}`` /
        ``{"prompt_token_ids": ...}``, or a list of those. ``sampling_params``: one for
        all prompts or one per prompt. Invalid prompts or params raise ValueError and
        leave nothing queued.
        """
        return self._collect(self._prompt_jobs(prompts, sampling_params), use_tqdm)

    def chat(
        self,
        messages: Conversation | Sequence[Conversation],
        sampling_params: ParamsInput = None,
        use_tqdm: bool = True,
        *,
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
    ) -> list[RequestOutput]:
        """Answers one conversation (a list of ``{"role", "content"}`` messages) or a list of
        them, through the tokenizer's chat template (or ``chat_template``)."""
        jobs = self._chat_jobs(messages, sampling_params, add_generation_prompt, chat_template)
        return self._collect(jobs, use_tqdm)

    def stream(
        self,
        prompts: PromptInput | Sequence[PromptInput] | Conversation | Sequence[Conversation],
        sampling_params: ParamsInput = None,
        *,
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
    ) -> Iterator[StreamDelta]:
        """Yields text and token deltas as the engine produces them.

        Takes what ``generate`` takes, or conversations as ``chat`` does. Each delta's
        ``request_id`` is its prompt's position in this call ("0", "1", ...) and ``index``
        its sample; joining a sample's ``text`` deltas gives exactly the text ``generate``
        returns. Leaving the loop early aborts what is left.
        """
        if is_conversation(prompts) or (
            isinstance(prompts, Sequence)
            and not isinstance(prompts, str)
            and len(prompts) > 0
            and all(is_conversation(p) for p in prompts)
        ):
            jobs = self._chat_jobs(prompts, sampling_params, add_generation_prompt, chat_template)  # type: ignore[arg-type]
        else:
            jobs = self._prompt_jobs(prompts, sampling_params)  # type: ignore[arg-type]
        for position, delta in self._run(jobs, use_tqdm=False):
            yield replace(delta, request_id=str(position))

    def apply_chat_template(
        self,
        conversation: Conversation,
        *,
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
    ) -> str:
        """The prompt text ``chat`` feeds the model for ``conversation``."""
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in conversation],
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            chat_template=chat_template,
        )

    # ------------------------------------------------------------------ internals

    def _prompt_jobs(
        self, prompts: PromptInput | Sequence[PromptInput], sampling_params: ParamsInput
    ) -> list[_Job]:
        normalized = normalize_prompts(prompts)
        params = _params_per_prompt(sampling_params, len(normalized))
        texts = [p for p in normalized if isinstance(p, str)]
        encoded = iter(self.tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else [])
        return [
            _Job(p, list(next(encoded)), sp) if isinstance(p, str) else _Job(None, p, sp)
            for p, sp in zip(normalized, params)
        ]

    def _chat_jobs(
        self,
        messages: Conversation | Sequence[Conversation],
        sampling_params: ParamsInput,
        add_generation_prompt: bool,
        chat_template: str | None,
    ) -> list[_Job]:
        conversations = normalize_conversations(messages)
        params = _params_per_prompt(sampling_params, len(conversations))
        jobs = []
        for conversation, sp in zip(conversations, params):
            text = self.apply_chat_template(
                conversation,
                add_generation_prompt=add_generation_prompt,
                chat_template=chat_template,
            )
            # The template already holds every special token the model expects.
            jobs.append(_Job(text, self.tokenizer.encode(text, add_special_tokens=False), sp))
        return jobs

    def _collect(self, jobs: list[_Job], use_tqdm: bool) -> list[RequestOutput]:
        samples: list[list[CompletionOutput | None]] = [[None] * job.params.n for job in jobs]
        cached = [0] * len(jobs)
        for position, delta in self._run(jobs, use_tqdm):
            if delta.output is not None:
                samples[position][delta.index] = delta.output
                if delta.index == 0:
                    cached[position] = delta.num_cached_tokens
        results = []
        for position, job in enumerate(jobs):
            outputs = [o for o in samples[position] if o is not None]
            results.append(
                RequestOutput(
                    request_id=str(position),
                    prompt=job.prompt,
                    prompt_token_ids=job.prompt_token_ids,
                    outputs=outputs,
                    finished=len(outputs) == job.params.n,
                    num_cached_tokens=cached[position],
                )
            )
        return results

    def _run(self, jobs: list[_Job], use_tqdm: bool) -> Iterator[tuple[int, StreamDelta]]:
        """Queues every job (all or none), steps until they finish; yields (position, delta)."""
        call = next(self._calls)
        positions: dict[str, int] = {}
        remaining: dict[str, int] = {}  # unfinished samples per request
        try:
            for position, job in enumerate(jobs):
                try:
                    request_id = self.session.add_request(
                        job.prompt_token_ids, job.params, request_id=f"llm-{call}-{position}"
                    )
                except ValueError as exc:
                    raise ValueError(
                        f"prompt {position}: {exc}" if len(jobs) > 1 else str(exc)
                    ) from None
                positions[request_id] = position
                remaining[request_id] = job.params.n
            progress = GenerationProgress(
                len(jobs), self.session.stats(), enabled=use_tqdm and len(jobs) > 0
            )
            try:
                while remaining:
                    start = time.perf_counter()
                    deltas = self.session.step()
                    seconds = time.perf_counter() - start
                    num_finished = 0
                    for delta in deltas:
                        if delta.request_id not in remaining:
                            continue
                        if delta.finished:
                            remaining[delta.request_id] -= 1
                            if remaining[delta.request_id] == 0:
                                del remaining[delta.request_id]
                                num_finished += 1
                        yield positions[delta.request_id], delta
                    progress.step(seconds, self.session.stats(), num_finished)
            finally:
                progress.close()
        finally:
            for request_id in remaining:
                self.session.abort(request_id)


def _params_per_prompt(sampling_params: ParamsInput, num_prompts: int) -> list[SamplingParams]:
    if sampling_params is None:
        return [SamplingParams()] * num_prompts
    if isinstance(sampling_params, SamplingParams):
        return [sampling_params] * num_prompts
    if not isinstance(sampling_params, Sequence) or not all(
        isinstance(p, SamplingParams) for p in sampling_params
    ):
        raise TypeError(
            "sampling_params must be a SamplingParams, a list of them (one per prompt), or None"
        )
    if len(sampling_params) != num_prompts:
        raise ValueError(
            f"got {len(sampling_params)} SamplingParams for {num_prompts} prompts: "
            "pass one SamplingParams for all prompts, or exactly one per prompt"
        )
    return list(sampling_params)
