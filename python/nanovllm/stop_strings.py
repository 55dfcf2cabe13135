"""Stop strings, matched on detokenized text.

A stop string may span several tokens, so it is searched in the text, not the ids. While
streaming, text that could still become the start of a stop string is held back, so the
streamed pieces always join to the final (truncated) text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["StopMatch", "StopStringMatcher"]


@dataclass(frozen=True)
class StopMatch:
    stop: str  # the stop string found
    end: int  # where the output text ends: before the stop string, or after it if kept


class StopStringMatcher:
    def __init__(self, stop: Sequence[str], *, include_in_output: bool = False) -> None:
        self._stop = tuple(stop)
        self._include = include_in_output
        self._longest = max((len(s) for s in self._stop), default=0)

    def __bool__(self) -> bool:
        return bool(self._stop)

    def find(self, text: str, num_new_chars: int) -> StopMatch | None:
        """The earliest stop string that ends within the last ``num_new_chars`` of ``text``.

        Earlier text was searched before, so only occurrences that reach into the new
        characters are looked for.
        """
        if not self._stop or num_new_chars <= 0:
            return None
        start = max(0, len(text) - num_new_chars - self._longest + 1)
        best: tuple[int, str] | None = None
        for stop in self._stop:
            at = text.find(stop, start)
            if at != -1 and (best is None or at < best[0]):
                best = (at, stop)
        if best is None:
            return None
        at, stop = best
        return StopMatch(stop, at + len(stop) if self._include else at)

    def holdback(self, text: str) -> int:
        """How many trailing characters of ``text`` could begin a stop string.

        Those must not be streamed yet: the next tokens may complete the stop string, and
        the output is then cut before it.
        """
        for size in range(min(self._longest - 1, len(text)), 0, -1):
            tail = text[-size:]
            if any(stop.startswith(tail) for stop in self._stop):
                return size
        return 0
