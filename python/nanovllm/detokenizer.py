"""Incremental detokenization: token ids arrive a few at a time, text leaves in pieces.

Byte-level BPE splits one character over several tokens (emoji, CJK), and decoding such a
prefix yields U+FFFD. The detokenizer decodes a small window of recent tokens, emits only
text that ends on a complete character and holds the rest back until the next tokens
complete it. Joining every piece (``push`` ... ``flush``) gives exactly
``tokenizer.decode(all_ids, skip_special_tokens=...)`` for byte-level tokenizers, except
that a character left incomplete at the very end (max_tokens cut it) is dropped, as vLLM
does, rather than shown as U+FFFD.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["IncrementalDetokenizer"]

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Detokenizes one sequence of output tokens incrementally.

    The window starts at ``_prefix`` (a token index where emitted text ended on a
    character boundary, one emission ago) and ``_read`` marks where the emitted text
    ends; decoding ``ids[_prefix:_read]`` and ``ids[_prefix:]`` and taking the
    difference keeps context-dependent decoders (leading spaces) right.
    """

    def __init__(self, tokenizer: Any, *, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token_ids: Iterable[int]) -> str:
        """Adds tokens; returns the newly completed text (possibly empty)."""
        self._ids.extend(token_ids)
        return self._advance(final=False)

    def flush(self) -> str:
        """Returns what is held back, at the end of the sequence; an incomplete last
        character is dropped."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        window_text = self._decode(self._ids[self._prefix :])
        if final:
            window_text = window_text.rstrip(_REPLACEMENT)
        if len(window_text) <= len(prefix_text) or (
            not final and window_text.endswith(_REPLACEMENT)
        ):
            if final:
                self._prefix = self._read = len(self._ids)
            return ""
        new_text = window_text[len(prefix_text) :]
        self._prefix, self._read = self._read, len(self._ids)
        return new_text

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special_tokens)
