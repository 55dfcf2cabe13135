"""The peer: Hugging Face transformers `generate` on the same weights and dtype.

Batched and left padded, with max_new_tokens = min_new_tokens = the batch's largest
max_tokens, so every sequence runs to the end; only the requested tokens are counted.
"""

from __future__ import annotations

import time

import torch


def load_hf(model_dir: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.eval()
    return model


@torch.inference_mode()
def hf_generate(
    model,
    prompts: list[list[int]],
    max_tokens: list[int],
    *,
    do_sample: bool,
    temperature: float = 1.0,
    pad_token_id: int = 0,
    batch_size: int | None = None,
) -> tuple[list[list[int]], float]:
    """Generates for every prompt; returns the requested tokens and the wall time."""
    batch_size = batch_size or len(prompts)
    outputs: list[list[int]] = []
    start = time.perf_counter()
    for first in range(0, len(prompts), batch_size):
        batch = prompts[first : first + batch_size]
        wanted = max_tokens[first : first + batch_size]
        width = max(len(p) for p in batch)
        input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, prompt in enumerate(batch):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention_mask[row, width - len(prompt) :] = 1
        new = max(wanted)
        generated = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=pad_token_id,
        )
        for row, n in enumerate(wanted):
            outputs.append(generated[row, width : width + n].tolist())
    return outputs, time.perf_counter() - start
