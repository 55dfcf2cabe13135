"""asyncio over ``_core.EngineLoop``.

The C++ loop steps the engine on its own thread and never waits on Python. This side
never blocks the event loop either:

- ``submit`` returns once the loop has admitted the request (at most one engine step), so
  it runs in a worker thread, GIL released;
- one pump thread polls the outputs of every request at once (GIL released while it
  waits) and hands each batch to the event loop, which routes it to the request's queue;
- each sample's outputs become text through ``RequestTracker``, as for ``LLM``.

A request whose reader goes away (client disconnect, stop string) is aborted in the engine
and whatever it still sends is dropped.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nanovllm.outputs import StreamDelta
from nanovllm.request_tracker import RequestTracker
from nanovllm.sampling_params import SamplingParams
from nanovllm.server.metrics import Metrics

# Submitting threads mostly sleep in C++ until the next engine step; enough of them that a
# burst of clients is admitted in one step rather than a few per step.
_SUBMIT_THREADS = 64
# How long the pump sleeps in C++ before it looks whether to stop.
_POLL_SECONDS = 0.1


class RequestStream:
    """The samples of one request. Iterate for ``StreamDelta``s (samples interleaved);
    leaving the iteration early, or ``close()``, aborts the unfinished samples."""

    def __init__(self, engine: AsyncEngine, request_id: str, params: SamplingParams) -> None:
        self.request_id = request_id
        self.params = params
        self._engine = engine
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._trackers: dict[int, RequestTracker] = {}  # engine id -> tracker, unfinished
        self._start = time.monotonic()
        self._last_token: dict[int, float] = {}  # engine id -> when its last token came

    def __aiter__(self) -> AsyncIterator[StreamDelta]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[StreamDelta]:
        try:
            while self._trackers:
                out = await self._queue.get()
                tracker = self._trackers.get(out.request_id)
                if tracker is None:  # queued before a stop string finished its sample
                    continue
                delta = tracker.update(out)
                self._observe(out.request_id, delta)
                if tracker.finished:
                    del self._trackers[out.request_id]
                    if tracker.needs_abort:
                        self._engine._release(out.request_id)
                yield delta
        finally:
            self.close()

    def close(self) -> None:
        for engine_id in self._trackers:
            self._engine._release(engine_id)
            self._engine.metrics.observe_finished("abort", time.monotonic() - self._start)
        self._trackers.clear()

    def _add(self, engine_id: int, index: int, tokenizer: Any) -> None:
        self._trackers[engine_id] = RequestTracker(
            self.request_id, self.params, tokenizer, index=index
        )

    def _observe(self, engine_id: int, delta: StreamDelta) -> None:
        now = time.monotonic()
        metrics = self._engine.metrics
        if delta.token_ids:
            last = self._last_token.get(engine_id)
            if last is None:
                metrics.observe_first_token(now - self._start)
            else:
                metrics.observe_time_per_output_token((now - last) / len(delta.token_ids))
            self._last_token[engine_id] = now
        if delta.finished:
            metrics.observe_finished(delta.finish_reason or "abort", now - self._start)


class AsyncEngine:
    """Requests in, ``RequestStream``s out, over one ``_core.EngineLoop``.

    Every method runs on the event loop thread, which owns the routing tables; only the
    pump thread and the submit workers run elsewhere, and they touch nothing but the C++
    loop and ``call_soon_threadsafe``.
    """

    def __init__(self, core: Any, tokenizer: Any) -> None:
        self.core = core
        self.tokenizer = tokenizer
        self.metrics = Metrics()
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._submitter = ThreadPoolExecutor(_SUBMIT_THREADS, thread_name_prefix="nanovllm-submit")
        self._pump: threading.Thread | None = None
        self._stopping = threading.Event()
        # Engine id -> its stream, until its final output is routed.
        self._routes: dict[int, RequestStream] = {}
        # Outputs that arrived before their submit() returned (the pump can be quicker).
        self._early: dict[int, list[Any]] = {}
        # Aborted because nobody reads them; their outputs are dropped up to the final one.
        self._abandoned: set[int] = set()

    @property
    def max_model_len(self) -> int:
        return int(self.core.max_model_len)

    def start(self) -> None:
        """Starts the pump; call from the event loop that will serve requests."""
        self._event_loop = asyncio.get_running_loop()
        self._pump = threading.Thread(target=self._run_pump, name="nanovllm-pump", daemon=True)
        self._pump.start()

    async def close(self) -> None:
        """Aborts every request, stops the C++ loop and the pump."""
        await asyncio.to_thread(self.core.shutdown)
        self._stopping.set()
        if self._pump is not None:
            await asyncio.to_thread(self._pump.join)
        self._submitter.shutdown(wait=False)

    async def add_request(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, request_id: str
    ) -> RequestStream:
        """Submits ``params.n`` samples of each prompt, all or none. Sample i of prompt p is
        choice ``p * n + i`` (the ``index`` of its deltas).

        Raises what the engine raises: ValueError for an invalid request,
        ``_core.QueueFullError`` when too many wait, ``_core.EngineStoppedError``.
        """
        cores = [params.to_core(i) for i in range(params.n)]
        stream = RequestStream(self, request_id, params)
        submissions = [
            self._submit(list(prompt), core, stream, p * params.n + i)
            for p, prompt in enumerate(prompts)
            for i, core in enumerate(cores)
        ]
        try:
            results = await asyncio.gather(*submissions, return_exceptions=True)
        except BaseException:
            stream.close()
            raise
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            stream.close()
            raise errors[0]
        self.metrics.observe_prompt(sum(len(prompt) for prompt in prompts) * params.n)
        return stream

    async def _submit(
        self, prompt: list[int], core: Any, stream: RequestStream, index: int
    ) -> None:
        assert self._event_loop is not None, "AsyncEngine.start() was not called"
        future = self._event_loop.run_in_executor(self._submitter, self.core.submit, prompt, core)
        try:
            engine_id = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The client left while the engine admitted the request: abort it once admitted.
            future.add_done_callback(self._abandon_submitted)
            raise
        stream._add(engine_id, index, self.tokenizer)
        self._routes[engine_id] = stream
        self._dispatch(self._early.pop(engine_id, []))

    def _abandon_submitted(self, future: asyncio.Future[int]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        engine_id = future.result()
        if not any(out.finished for out in self._early.pop(engine_id, [])):
            self._abandoned.add(engine_id)
            self.core.abort(engine_id)

    def _release(self, engine_id: int) -> None:
        """Its stream is done with the sample: abort it unless the engine finished it."""
        if self._routes.pop(engine_id, None) is not None:
            self._abandoned.add(engine_id)
            self.core.abort(engine_id)

    def _dispatch(self, outputs: list[Any]) -> None:
        for out in outputs:
            engine_id = out.request_id
            stream = self._routes.get(engine_id)
            if stream is not None:
                if out.finished:
                    del self._routes[engine_id]
                stream._queue.put_nowait(out)
            elif engine_id in self._abandoned:
                if out.finished:
                    self._abandoned.discard(engine_id)
            else:
                self._early.setdefault(engine_id, []).append(out)

    def _run_pump(self) -> None:
        assert self._event_loop is not None
        while True:
            # Stopping is set after the C++ loop has shut down, so one last look without
            # waiting collects every final output.
            stopping = self._stopping.is_set()
            outputs = self.core.poll(0.0 if stopping else _POLL_SECONDS)
            if outputs:
                self._event_loop.call_soon_threadsafe(self._dispatch, outputs)
            if stopping:
                return
