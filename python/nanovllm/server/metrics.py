"""``GET /metrics``: Prometheus text exposition (format 0.0.4), written by hand.

Engine gauges and counters come from the C++ ``EngineStats`` snapshot at scrape time;
latencies and finish reasons are observed by the server, per sample (engine request), as
its outputs reach the client's stream. Names follow vLLM's with a ``nanovllm:`` prefix.
Everything here runs on the event loop thread, so nothing needs a lock.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# vLLM's buckets, in seconds.
_TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
_TPOT_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
_E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
)
FINISH_REASONS = ("stop", "length", "abort")


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out = []
        cumulative = 0
        for bound, count in zip([*map(_number, self.buckets), "+Inf"], self.counts):
            cumulative += count
            out.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        out.append(f"{name}_sum {_number(self.sum)}")
        out.append(f"{name}_count {cumulative}")
        return out


class Metrics:
    def __init__(self) -> None:
        self.time_to_first_token = Histogram(_TTFT_BUCKETS)
        self.time_per_output_token = Histogram(_TPOT_BUCKETS)
        self.e2e_request_latency = Histogram(_E2E_BUCKETS)
        self.finished: Counter[str] = Counter()
        self.prompt_tokens = 0

    def observe_prompt(self, num_tokens: int) -> None:
        self.prompt_tokens += num_tokens

    def observe_first_token(self, seconds: float) -> None:
        self.time_to_first_token.observe(seconds)

    def observe_time_per_output_token(self, seconds: float) -> None:
        self.time_per_output_token.observe(seconds)

    def observe_finished(self, reason: str, seconds: float) -> None:
        self.finished[reason] += 1
        self.e2e_request_latency.observe(seconds)

    def render(self, stats: Any) -> str:
        """The exposition text, with ``stats`` the engine's current ``EngineStats``."""
        hit_rate = (
            stats.prefix_cache_hits / stats.prefix_cache_queries
            if stats.prefix_cache_queries
            else 0.0
        )
        out: list[str] = []

        def metric(name: str, kind: str, about: str, lines: list[str] | float) -> None:
            out.append(f"# HELP nanovllm:{name} {about}")
            out.append(f"# TYPE nanovllm:{name} {kind}")
            if isinstance(lines, list):
                out.extend(lines)
            else:
                out.append(f"nanovllm:{name} {_number(lines)}")

        metric(
            "num_requests_running", "gauge", "Sequences in the running batch.", stats.num_running
        )
        metric(
            "num_requests_waiting",
            "gauge",
            "Sequences waiting to be scheduled (preempted ones included).",
            stats.num_waiting,
        )
        metric(
            "kv_cache_usage_perc",
            "gauge",
            "Fraction of KV cache blocks in use (0 to 1).",
            stats.kv_cache_usage,
        )
        metric("num_kvcache_blocks", "gauge", "KV cache blocks in total.", stats.num_kvcache_blocks)
        metric(
            "num_free_kvcache_blocks",
            "gauge",
            "KV cache blocks not held by any sequence.",
            stats.num_free_blocks,
        )
        metric(
            "prefix_cache_queries_total",
            "counter",
            "Prompt tokens looked up in the prefix cache.",
            stats.prefix_cache_queries,
        )
        metric(
            "prefix_cache_hits_total",
            "counter",
            "Prompt tokens served by the prefix cache.",
            stats.prefix_cache_hits,
        )
        metric(
            "prefix_cache_hit_rate",
            "gauge",
            "prefix_cache_hits_total / prefix_cache_queries_total.",
            hit_rate,
        )
        metric(
            "num_preemptions_total",
            "counter",
            "Sequences preempted (and later recomputed).",
            stats.num_preemptions,
        )
        metric(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens of accepted requests, per sample.",
            self.prompt_tokens,
        )
        metric(
            "prompt_tokens_computed_total",
            "counter",
            "Prompt tokens the model computed (cache hits excluded).",
            stats.prompt_tokens_total,
        )
        metric(
            "generation_tokens_total", "counter", "Tokens sampled.", stats.generation_tokens_total
        )
        metric("num_steps_total", "counter", "Engine steps run.", stats.num_steps)
        metric(
            "request_success_total",
            "counter",
            "Finished samples by finish reason (abort: client gone, or shutdown).",
            [
                f'nanovllm:request_success_total{{finished_reason="{reason}"}} {self.finished[reason]}'
                for reason in FINISH_REASONS
            ],
        )
        metric(
            "time_to_first_token_seconds",
            "histogram",
            "Arrival to first token, per sample.",
            self.time_to_first_token.lines("nanovllm:time_to_first_token_seconds"),
        )
        metric(
            "time_per_output_token_seconds",
            "histogram",
            "Time between tokens of a sample, per token.",
            self.time_per_output_token.lines("nanovllm:time_per_output_token_seconds"),
        )
        metric(
            "e2e_request_latency_seconds",
            "histogram",
            "Arrival to finish, per sample.",
            self.e2e_request_latency.lines("nanovllm:e2e_request_latency_seconds"),
        )
        return "\n".join(out) + "\n"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)
