"""Hugging Face transformers as the reference the engine is checked against.

Greedy runs keep, for every step, the gap between the best and the second-best score
transformers chose from, so that a divergence can be told apart from a genuine near-tie
(summing in another order moves float32 logits by ~1e-6, far below 1e-4).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# A top-2 gap below this, in float32, is a tie: summing in another order may flip it.
TIE_GAP = 1e-4


@dataclass
class GreedyRun:
    """What transformers generated greedily for one prompt."""

    token_ids: list[int]
    # Per step: best score minus second-best score, over the processed scores argmax saw.
    top2_gaps: list[float]


def load_hf_model(folder: str | Path, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    return model.eval()


@torch.inference_mode()
def hf_greedy(model: Any, prompt_ids: Sequence[int], max_new_tokens: int) -> GreedyRun:
    """``generate(do_sample=False)`` for exactly ``max_new_tokens`` tokens: eos is suppressed
    until then (``min_new_tokens``), as the engine's ``min_tokens`` does."""
    input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
    out = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        output_scores=True,
        return_dict_in_generate=True,
    )
    tokens = out.sequences[0, input_ids.shape[1] :].tolist()
    gaps = []
    for scores in out.scores:
        top2 = scores[0].float().topk(2).values
        gaps.append(float(top2[0] - top2[1]))
    assert len(tokens) == max_new_tokens
    return GreedyRun(tokens, gaps)


def greedy_mismatch(ours: Sequence[int], ref: GreedyRun, *, tie_gap: float = TIE_GAP) -> str | None:
    """None when ``ours`` equals the reference, or first differs where the reference had a
    near-tie (gap < ``tie_gap``: warned about, and nothing after that step is compared, since
    the contexts differ from there on). Otherwise a message naming the step and the gap."""
    ours = list(ours)
    if len(ours) != len(ref.token_ids):
        return f"generated {len(ours)} tokens, transformers {len(ref.token_ids)}"
    for step, (a, b) in enumerate(zip(ours, ref.token_ids)):
        if a == b:
            continue
        gap = ref.top2_gaps[step]
        if gap < tie_gap:
            warnings.warn(
                f"near-tie accepted at step {step}: ours {a}, transformers {b}, top-2 gap "
                f"{gap:.3g}; later steps not compared",
                stacklevel=2,
            )
            return None
        return (
            f"diverges at step {step}: ours {a}, transformers {b} (top-2 gap {gap:.3g} >= "
            f"{tie_gap:g}, not a tie); ours {ours[: step + 1]}, theirs {ref.token_ids[: step + 1]}"
        )
    return None


def assert_greedy_matches(
    ours: Sequence[Sequence[int]], refs: Sequence[GreedyRun], what: str
) -> None:
    failures = []
    for i, (tokens, ref) in enumerate(zip(ours, refs, strict=True)):
        message = greedy_mismatch(tokens, ref)
        if message is not None:
            failures.append(f"prompt {i}: {message}")
    assert not failures, f"{what}: greedy tokens differ from transformers\n" + "\n".join(failures)


@torch.inference_mode()
def hf_logprobs(model: Any, prompt_ids: Sequence[int], output_ids: Sequence[int]) -> torch.Tensor:
    """Teacher-forced: log_softmax of transformers' logits (in float32) at each output
    position, given the prompt and the output tokens before it. [len(output_ids), vocab]."""
    ids = torch.tensor([[*prompt_ids, *output_ids]], dtype=torch.long)
    logits = model(ids, attention_mask=torch.ones_like(ids)).logits[0].float()
    start = len(prompt_ids) - 1
    return torch.log_softmax(logits[start : start + len(output_ids)], dim=-1)


def save_random_model(config: Any, folder: Path, *, seed: int = 0) -> Path:
    """A causal LM with random weights from ``config``, saved as safetensors in float32,
    with a word-level tokenizer (token i is ``<i>``) so the folder loads like any other."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # transformers initialises biases to 0 and norm weights to 1; random values make the
    # parity check cover them too.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0.0, 0.5)
            elif "norm" in name:
                param.uniform_(0.5, 1.5)
    model.save_pretrained(str(folder), safe_serialization=True)

    vocab = {f"<{i}>": i for i in range(config.vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<0>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<0>").save_pretrained(
        str(folder)
    )
    return folder
