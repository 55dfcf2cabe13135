"""EngineSession: requests in, per-request text deltas out, over one ``_core.LLMEngine``.

It owns what Python adds to the engine: ``n`` samples per request, seeds, and one
``RequestTracker`` per sample (incremental detokenization, stop strings, which abort the
request in the engine, logprobs). ``LLM`` drives it for offline batches; a server can drive
the same object from its own step-loop thread (or use ``RequestTracker`` directly over
``_core.EngineLoop``).

Threading: every method takes the session's lock, so ``add_request`` and ``abort`` may be
called from any thread while one thread loops on ``step``; they wait for the step in
progress to end (``step`` releases the GIL inside the engine, so other threads run).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nanovllm.outputs import StreamDelta
from nanovllm.request_tracker import RequestTracker
from nanovllm.sampling_params import SamplingParams

__all__ = ["EngineSession"]


@dataclass
class _Request:
    request_id: str
    # Engine request id -> tracker, one per sample; a sample leaves when it finishes.
    samples: dict[int, RequestTracker] = field(default_factory=dict)


class EngineSession:
    """Requests in, ``StreamDelta`` out, over one engine.

    >>> session = EngineSession(engine, tokenizer)
    >>> rid = session.add_request(token_ids, SamplingParams(max_tokens=32, stop=["\\n"]))
    >>> while session.has_unfinished():
    ...     for delta in session.step():
    ...         print(delta.text, end="")
    """

    def __init__(self, engine: Any, tokenizer: Any, *, seed: int | None = None) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        # With a session seed, requests without their own seed get one drawn from it, so
        # a whole run is reproducible; without, the engine draws seeds itself.
        self._rng = random.Random(seed) if seed is not None else None
        self._lock = threading.RLock()
        self._requests: dict[str, _Request] = {}
        self._owner: dict[int, _Request] = {}  # engine request id -> its request
        self._next_id = 0

    def add_request(
        self,
        prompt_token_ids: Sequence[int],
        params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
    ) -> str:
        """Queues ``params.n`` engine requests for one prompt; returns the request id.

        Raises ValueError (invalid params, empty or too long prompt, id in use) with
        nothing queued.
        """
        params = params if params is not None else SamplingParams()
        prompt = [int(t) for t in prompt_token_ids]
        with self._lock:
            if request_id is None:
                request_id = self._new_id()
            elif request_id in self._requests:
                raise ValueError(f"request id {request_id!r} is already in use")
            core_params = [params.to_core(i) for i in range(params.n)]
            if params.seed is None and self._rng is not None:
                base = self._rng.getrandbits(63)
                for i, core in enumerate(core_params):
                    core.seed = base + i
            engine_ids: list[int] = []
            try:
                for core in core_params:
                    engine_ids.append(self.engine.add_request(prompt, core))
            except BaseException:
                for engine_id in engine_ids:
                    self.engine.abort(engine_id)
                raise
            request = _Request(request_id)
            for index, engine_id in enumerate(engine_ids):
                tracker = RequestTracker(request_id, params, self.tokenizer, index=index)
                request.samples[engine_id] = tracker
                self._owner[engine_id] = request
            self._requests[request_id] = request
            return request_id

    def step(self) -> list[StreamDelta]:
        """Runs one engine step; one delta per sample that got tokens or finished."""
        with self._lock:
            deltas: list[StreamDelta] = []
            for out in self.engine.step():
                # Outputs of samples already finished here (a stop string aborted them)
                # or dropped by abort() are not ours to report.
                request = self._owner.get(out.request_id)
                if request is None:
                    continue
                tracker = request.samples[out.request_id]
                deltas.append(tracker.update(out))
                if tracker.finished:
                    if tracker.needs_abort:
                        self.engine.abort(out.request_id)
                    self._forget(request, out.request_id)
            return deltas

    def abort(self, request_id: str) -> bool:
        """Stops every sample of the request and forgets it: no more deltas for it.

        Returns False for unknown or finished requests.
        """
        with self._lock:
            request = self._requests.pop(request_id, None)
            if request is None:
                return False
            for engine_id in request.samples:
                del self._owner[engine_id]
                self.engine.abort(engine_id)
            return True

    def has_unfinished(self) -> bool:
        with self._lock:
            return bool(self._requests)

    def num_unfinished(self) -> int:
        with self._lock:
            return len(self._requests)

    def stats(self) -> Any:
        """The engine's ``_core.EngineStats``."""
        with self._lock:
            return self.engine.stats()

    def _forget(self, request: _Request, engine_id: int) -> None:
        del self._owner[engine_id]
        del request.samples[engine_id]
        if not request.samples:
            del self._requests[request.request_id]

    def _new_id(self) -> str:
        while str(self._next_id) in self._requests:
            self._next_id += 1
        request_id = str(self._next_id)
        self._next_id += 1
        return request_id
