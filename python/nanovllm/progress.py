"""The progress bar of ``LLM.generate``: requests done / total, live prefill and decode speed.

Speeds come from the engine's token counters and the time spent in engine steps: a step
that computed prompt tokens counts towards prefill, a step that only sampled towards
decode, so the decode figure is not diluted by prefill and vice versa.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["GenerationProgress"]

_REFRESH_S = 0.5


class GenerationProgress:
    def __init__(
        self, total: int, stats: Any, *, enabled: bool = True, desc: str = "Generating"
    ) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=desc, unit="req", file=sys.stderr, dynamic_ncols=True
            )
        self._last = stats
        self._prefill_tokens = 0
        self._prefill_s = 0.0
        self._decode_tokens = 0
        self._decode_s = 0.0
        self._next_refresh = 0.0

    def step(self, seconds: float, stats: Any, num_finished: int) -> None:
        """Accounts one engine step that took ``seconds`` and finished ``num_finished`` requests."""
        prompt_tokens = stats.prompt_tokens_total - self._last.prompt_tokens_total
        generated = stats.generation_tokens_total - self._last.generation_tokens_total
        self._last = stats
        if prompt_tokens > 0:
            self._prefill_tokens += prompt_tokens
            self._prefill_s += seconds
        else:
            self._decode_tokens += generated
            self._decode_s += seconds
        if self._bar is None:
            return
        if num_finished:
            self._bar.update(num_finished)
        now = time.monotonic()
        if now >= self._next_refresh:
            self._next_refresh = now + _REFRESH_S
            self._bar.set_postfix_str(self._speeds(), refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._speeds(), refresh=False)
            self._bar.close()

    def _speeds(self) -> str:
        prefill = _rate(self._prefill_tokens, self._prefill_s)
        decode = _rate(self._decode_tokens, self._decode_s)
        return f"prefill {prefill} tok/s, decode {decode} tok/s"


def _rate(tokens: int, seconds: float) -> str:
    return f"{tokens / seconds:.1f}" if seconds > 0 else "-"
