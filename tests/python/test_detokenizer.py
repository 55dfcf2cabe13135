"""Incremental detokenization with the real tokenizers: emoji and CJK split over tokens."""

from __future__ import annotations

import random
from typing import Any

import pytest
from nanovllm.detokenizer import IncrementalDetokenizer

TEXTS = [
    "Hello 世界! 🎉👍🏽 naïve café — ok.",
    "中文测试：你好，世界。日本語もテスト。한국어 🇫🇷🏳️‍🌈 done",
    "def f(x):\n    return x ** 2  # ✓ 👩‍👩‍👧‍👦\n",
]


def _pieces(tokenizer: Any, ids: list[int], chunk_sizes: list[int], **kwargs: Any) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer, **kwargs)
    pieces, start = [], 0
    for size in chunk_sizes:
        pieces.append(detok.push(ids[start : start + size]))
        start += size
    pieces.append(detok.flush())
    return pieces


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("which", ["qwen_tokenizer", "smol_tokenizer"])
def test_token_by_token_never_emits_partial_characters(
    which: str, text: str, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(which)
    ids = tokenizer.encode(text, add_special_tokens=False)
    # The text really is split inside characters, else the test proves nothing.
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)
    pieces = _pieces(tokenizer, ids, [1] * len(ids))
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == text == tokenizer.decode(ids)


@pytest.mark.parametrize("seed", range(3))
def test_random_chunks_join_to_the_full_decode(qwen_tokenizer: Any, seed: int) -> None:
    rng = random.Random(seed)
    ids = qwen_tokenizer.encode("".join(TEXTS), add_special_tokens=False)
    sizes: list[int] = []
    while sum(sizes) < len(ids):
        sizes.append(rng.randint(1, 4))
    assert "".join(_pieces(qwen_tokenizer, ids, sizes)) == qwen_tokenizer.decode(ids)


def test_skip_special_tokens(qwen_tokenizer: Any) -> None:
    end = qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = qwen_tokenizer.encode("你好", add_special_tokens=False) + [end]
    ids += qwen_tokenizer.encode(" 🎉 world", add_special_tokens=False)
    one_by_one = [1] * len(ids)
    assert "".join(_pieces(qwen_tokenizer, ids, one_by_one)) == "你好 🎉 world"
    kept = "".join(_pieces(qwen_tokenizer, ids, one_by_one, skip_special_tokens=False))
    assert kept == "你好<|im_end|> 🎉 world"


def test_an_incomplete_last_character_is_dropped(qwen_tokenizer: Any) -> None:
    ids = qwen_tokenizer.encode("ok 🎉", add_special_tokens=False)
    cut = next(k for k in range(1, len(ids)) if qwen_tokenizer.decode(ids[:k]).endswith("\ufffd"))
    detok = IncrementalDetokenizer(qwen_tokenizer)
    pieces = [detok.push([i]) for i in ids[:cut]]
    pieces.append(detok.flush())
    # max_tokens ended the output mid-character: no U+FFFD, the complete text only.
    assert "".join(pieces) == "ok "
