"""The ASGI app: OpenAI's completions, chat completions and models endpoints, vLLM's
tokenize / detokenize, health and Prometheus metrics, over one ``AsyncEngine``.

Every error a client can cause is answered in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``: 400 for malformed JSON, bad
parameters or a request the engine cannot take (too long), 401 without the API key, 404
for another model name, 503 with ``Retry-After`` when too many requests wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from jinja2 import TemplateError
from starlette.exceptions import HTTPException as StarletteHTTPException

from nanovllm import _core
from nanovllm.inputs import normalize_prompts
from nanovllm.outputs import CompletionOutput
from nanovllm.server import protocol
from nanovllm.server.async_engine import AsyncEngine, RequestStream
from nanovllm.server.metrics import CONTENT_TYPE
from nanovllm.server.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionLogprobs,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)

# Engine and SamplingParams messages start with the field at fault: "top_p = 2 is invalid: ...".
_FIELD = re.compile(r"^(\w+) = ")
# Seconds a client should wait after a 503 before retrying.
_RETRY_AFTER = "1"


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = protocol.error_body(message, type_, param, code)


def _bad_request(exc: Exception) -> APIError:
    message = str(exc)
    field = _FIELD.match(message)
    return APIError(400, message, "invalid_request_error", field.group(1) if field else None)


def build_app(
    engine: AsyncEngine, *, served_model_name: str, model_path: str, api_key: str | None = None
) -> FastAPI:
    """The app over a constructed (not yet started) engine; the app's lifespan starts it
    and shuts it down."""
    tokenizer = engine.tokenizer

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            await engine.close()

    app = FastAPI(title="nano-vllm", lifespan=lifespan)

    # ------------------------------------------------------------------ errors

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        headers = {"Retry-After": _RETRY_AFTER} if exc.status == 503 else None
        return JSONResponse(exc.body, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = exc.errors()[0]
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", error.get("msg"))
            message, param = f"malformed JSON in the request body: {reason}", None
        elif error.get("type") == "extra_forbidden":
            message, param = f"unsupported parameter: {'.'.join(location)}", ".".join(location)
        else:
            param = ".".join(location) or None
            message = f"{param}: {error.get('msg')}" if param else str(error.get("msg"))
        return JSONResponse(
            protocol.error_body(message, "invalid_request_error", param), status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            protocol.error_body(str(exc.detail), "invalid_request_error"),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            protocol.error_body(f"internal error: {exc!r}", "server_error"), status_code=500
        )

    def check_api_key(request: Request) -> None:
        given = request.headers.get("authorization", "").encode()
        if api_key is not None and not secrets.compare_digest(given, f"Bearer {api_key}".encode()):
            raise APIError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                "invalid_request_error",
                code="invalid_api_key",
            )

    def check_model(name: str | None) -> None:
        if name is not None and name != served_model_name:
            raise APIError(
                404,
                f"the model '{name}' does not exist; this server serves '{served_model_name}'",
                "invalid_request_error",
                "model",
                "model_not_found",
            )

    async def submit(
        prompts: list[list[int]], params_for: Callable[[], Any], prefix: str
    ) -> RequestStream:
        """Builds the params (their validation errors are 400s too) and submits."""
        try:
            params = params_for()
            return await engine.add_request(prompts, params, protocol.new_id(prefix))
        except (ValueError, TypeError) as exc:
            raise _bad_request(exc) from None
        except _core.QueueFullError as exc:
            raise APIError(503, str(exc), "server_error", code="queue_full") from None
        except _core.EngineStoppedError as exc:
            raise APIError(503, str(exc), "server_error", code="engine_stopped") from None

    def chat_prompt(
        messages: list[ChatMessage], add_generation_prompt: bool, chat_template: str | None = None
    ) -> list[int]:
        text = tokenizer.apply_chat_template(
            [m.for_template() for m in messages],
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            chat_template=chat_template,
        )
        # The template already holds every special token the model expects.
        return tokenizer.encode(text, add_special_tokens=False)

    guarded = [Depends(check_api_key)]

    # ------------------------------------------------------------- endpoints

    @app.get("/health")
    async def health() -> Response:
        error = engine.core.error
        if error:
            return JSONResponse(
                protocol.error_body(f"the engine stopped: {error}", "server_error"), status_code=503
            )
        return Response(status_code=200)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.render(engine.core.stats()), media_type=CONTENT_TYPE)

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> dict[str, Any]:
        card = {
            "id": served_model_name,
            "object": "model",
            "created": protocol.now(),
            "owned_by": "nanovllm",
            "root": model_path,
            "max_model_len": engine.max_model_len,
        }
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        check_model(body.model)
        try:
            prompts = normalize_prompts(body.prompt)
        except TypeError as exc:
            raise _bad_request(exc) from None
        if not prompts:
            raise APIError(
                400, "prompt: give at least one prompt", "invalid_request_error", "prompt"
            )
        encoded = [
            p if isinstance(p, list) else tokenizer(p, add_special_tokens=True)["input_ids"]
            for p in prompts
        ]
        stream = await submit(encoded, body.sampling_params, "cmpl")
        head = {
            "id": stream.request_id,
            "object": "text_completion",
            "created": protocol.now(),
            "model": served_model_name,
        }
        num_prompt_tokens = sum(len(p) for p in encoded)
        if body.stream:
            return _sse(_completion_events(stream, head, num_prompt_tokens, body))

        def choice(output: CompletionOutput) -> dict[str, Any]:
            logprobs = None
            if body.logprobs is not None and output.logprobs is not None:
                logprobs = CompletionLogprobs().add(output.token_ids, output.logprobs)
            return {
                "index": output.index,
                "text": output.text,
                "logprobs": logprobs,
                "finish_reason": output.finish_reason,
                "stop_reason": output.stop_reason,
            }

        return await _respond(request, stream, head, num_prompt_tokens, choice)

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        check_model(body.model)
        try:
            prompt = chat_prompt(body.messages, body.add_generation_prompt, body.chat_template)
        except (TemplateError, ValueError) as exc:  # the template's own message says what is wrong
            raise APIError(
                400,
                f"messages: the chat template failed: {exc}",
                "invalid_request_error",
                "messages",
            ) from None
        # Without a limit the answer may fill the rest of the context, as with OpenAI's API.
        room = max(1, engine.max_model_len - len(prompt))
        stream = await submit([prompt], lambda: body.sampling_params(room), "chatcmpl")
        head = {"id": stream.request_id, "created": protocol.now(), "model": served_model_name}
        if body.stream:
            head["object"] = "chat.completion.chunk"
            return _sse(_chat_events(stream, head, len(prompt), body))

        def choice(output: CompletionOutput) -> dict[str, Any]:
            logprobs = None
            if body.logprobs and output.logprobs is not None:
                logprobs = protocol.chat_logprobs(output.token_ids, output.logprobs)
            return {
                "index": output.index,
                "message": {"role": "assistant", "content": output.text},
                "logprobs": logprobs,
                "finish_reason": output.finish_reason,
                "stop_reason": output.stop_reason,
            }

        head["object"] = "chat.completion"
        return await _respond(request, stream, head, len(prompt), choice)

    @app.post("/tokenize", dependencies=guarded)
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        check_model(body.model)
        if (body.prompt is None) == (body.messages is None):
            raise APIError(400, "give exactly one of prompt and messages", "invalid_request_error")
        if body.messages is not None:
            tokens = chat_prompt(body.messages, body.add_generation_prompt)
        else:
            tokens = tokenizer(body.prompt, add_special_tokens=body.add_special_tokens)["input_ids"]
        return {"count": len(tokens), "max_model_len": engine.max_model_len, "tokens": tokens}

    @app.post("/detokenize", dependencies=guarded)
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        check_model(body.model)
        vocab = len(tokenizer)
        bad = next((t for t in body.tokens if not 0 <= t < vocab), None)
        if bad is not None:
            raise APIError(
                400,
                f"tokens: {bad} is not a token id (0 <= id < {vocab})",
                "invalid_request_error",
                "tokens",
            )
        return {"prompt": tokenizer.decode(body.tokens)}

    return app


# ------------------------------------------------------------------------ helpers


async def _respond(
    request: Request,
    stream: RequestStream,
    head: dict[str, Any],
    num_prompt_tokens: int,
    choice: Callable[[CompletionOutput], dict[str, Any]],
) -> Response:
    """The non-streamed answer: every choice once all are finished."""

    async def collect() -> list[CompletionOutput]:
        outputs = [delta.output async for delta in stream if delta.output is not None]
        return sorted(outputs, key=lambda o: o.index)

    outputs = await _unless_disconnected(request, collect())
    if outputs is None:
        return Response(status_code=499)  # nobody is listening any more
    completion_tokens = sum(len(o.token_ids) for o in outputs)
    return JSONResponse(
        {
            **head,
            "choices": [choice(o) for o in outputs],
            "usage": protocol.usage(num_prompt_tokens, completion_tokens),
        }
    )


async def _unless_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """Runs ``work`` unless the client goes away first: then cancels it (which aborts its
    requests) and returns None. Streaming responses get this from Starlette itself."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


def _sse(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        async for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False, separators=(',', ':'))}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream")


def _usage_chunk(
    head: dict[str, Any], num_prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {**head, "choices": [], "usage": protocol.usage(num_prompt_tokens, completion_tokens)}


async def _completion_events(
    stream: RequestStream, head: dict[str, Any], num_prompt_tokens: int, body: CompletionRequest
) -> AsyncIterator[dict[str, Any]]:
    want_logprobs = body.logprobs is not None
    logprobs: dict[int, CompletionLogprobs] = {}
    completion_tokens = 0
    async for delta in stream:
        completion_tokens += len(delta.token_ids)
        # Held-back text (a possible stop string, half a character) waits for the next delta.
        if not (delta.text or delta.finished or (want_logprobs and delta.token_ids)):
            continue
        choice = {
            "index": delta.index,
            "text": delta.text,
            "logprobs": (
                logprobs.setdefault(delta.index, CompletionLogprobs()).add(
                    delta.token_ids, delta.logprobs
                )
                if want_logprobs and delta.logprobs is not None
                else None
            ),
            "finish_reason": delta.finish_reason,
            "stop_reason": delta.stop_reason,
        }
        yield {**head, "choices": [choice], **({"usage": None} if body.include_usage else {})}
    if body.include_usage:
        yield _usage_chunk(head, num_prompt_tokens, completion_tokens)


async def _chat_events(
    stream: RequestStream, head: dict[str, Any], num_prompt_tokens: int, body: ChatCompletionRequest
) -> AsyncIterator[dict[str, Any]]:
    usage_field = {"usage": None} if body.include_usage else {}
    # Every choice opens with the assistant's role, as OpenAI's stream does.
    for index in range(stream.params.n):
        choice = {
            "index": index,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        yield {**head, "choices": [choice], **usage_field}
    completion_tokens = 0
    async for delta in stream:
        completion_tokens += len(delta.token_ids)
        if not (delta.text or delta.finished or (body.logprobs and delta.token_ids)):
            continue
        choice = {
            "index": delta.index,
            "delta": {"content": delta.text} if delta.text else {},
            "logprobs": (
                protocol.chat_logprobs(delta.token_ids, delta.logprobs)
                if body.logprobs and delta.logprobs is not None
                else None
            ),
            "finish_reason": delta.finish_reason,
            "stop_reason": delta.stop_reason,
        }
        yield {**head, "choices": [choice], **usage_field}
    if body.include_usage:
        yield _usage_chunk(head, num_prompt_tokens, completion_tokens)
