"""``nanovllm serve``: load a model into a threaded engine and serve it over HTTP.

    nanovllm serve --model SmolLM2-135M-Instruct --port 8000
    curl localhost:8000/v1/completions -H 'Content-Type: application/json' \\
        -d '{"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}'
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from nanovllm.builtin_models import ModelPreparationError, resolve_model
from nanovllm.cli import add_engine_args, add_model_args, engine_kwargs
from nanovllm.config import Config

__all__ = ["build_parser", "main"]

API_KEY_ENV = "NANOVLLM_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanovllm serve",
        description="Serve a model over an OpenAI-compatible HTTP API "
        "(/v1/completions, /v1/chat/completions, /v1/models, /tokenize, /detokenize, /health, /metrics).",
    )
    add_model_args(parser)
    parser.add_argument(
        "--served-model-name", help="the model name clients use (default: --model as given)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s, this machine only)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer KEY' on the API (default: ${API_KEY_ENV}, else none)",
    )
    parser.add_argument(
        "--max-pending",
        type=int,
        help="most requests waiting to be scheduled; more get 503 + Retry-After "
        f"(default: {_default_max_pending()})",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )
    add_engine_args(parser)
    return parser


def _default_max_pending() -> str:
    try:
        from nanovllm import _core
    except ImportError:
        return "the engine loop's"
    return str(_core.EngineLoop.DEFAULT_MAX_PENDING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        app = _build(args)
    except (ValueError, TypeError, FileNotFoundError, ModelPreparationError) as exc:
        print(f"nanovllm serve: error: {exc}", file=sys.stderr)
        return 1

    import uvicorn

    # Requests still streaming when asked to stop get this long before they are cut off.
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5
    )
    return 0


def _build(args: argparse.Namespace) -> Any:
    from transformers import AutoTokenizer

    from nanovllm import _core
    from nanovllm.server.app import build_app
    from nanovllm.server.async_engine import AsyncEngine

    config = Config.from_kwargs(args.model, **engine_kwargs(args))
    config.to_core()  # fail on bad values before a (possibly long) model preparation
    model_path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or str(model_path))
    loop_args = {} if args.max_pending is None else {"max_pending": args.max_pending}
    core = _core.EngineLoop(config.to_core(str(model_path)), **loop_args)
    return build_app(
        AsyncEngine(core, tokenizer),
        served_model_name=args.served_model_name or args.model,
        model_path=str(model_path),
        api_key=args.api_key or None,
    )
