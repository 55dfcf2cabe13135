"""The benchmark workloads of BENCHMARKS.md, generated exactly as nano-vllm's bench.py does.

Every generator is seeded with 0 so that our engine and the peer see the same requests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    prompt_token_ids: list[int]
    max_tokens: int


def random_requests(
    num_requests: int,
    prompt_len: tuple[int, int],
    output_len: tuple[int, int],
    vocab_limit: int = 10000,
    seed: int = 0,
) -> list[Request]:
    """Random token-id prompts and output lengths, drawn in nano-vllm's bench.py order:
    every prompt (its length, then its ids) first, then every max_tokens."""
    rng = random.Random(seed)
    prompts = [
        [rng.randint(0, vocab_limit) for _ in range(rng.randint(*prompt_len))]
        for _ in range(num_requests)
    ]
    max_tokens = [rng.randint(*output_len) for _ in range(num_requests)]
    return [Request(p, m) for p, m in zip(prompts, max_tokens)]


def cpu_throughput_requests(num_requests: int = 64) -> list[Request]:
    return random_requests(num_requests, (32, 256), (32, 256))


def gpu_nanovllm_requests(num_requests: int = 256) -> list[Request]:
    return random_requests(num_requests, (100, 1024), (100, 1024))


LATENCY_PROMPT = (
    "Write a Python function that checks whether a string is a palindrome, "
    "ignoring case and punctuation, and explain how it works."
)
