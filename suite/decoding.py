"""Decoding with the trunk's KV cache."""

from __future__ import annotations

from collections.abc import Callable

import torch

from suite.model import Trunk


@torch.inference_mode()
def greedy(trunk: Trunk, prompt_ids: torch.Tensor, max_new_tokens: int, eos_id: int | None = None,
           stop: Callable[[int, list[int]], bool] | None = None, temperature: float = 0.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Continuations [B, max_new_tokens] of equal-length prompts [B, P]: one prefill pass, then one cached
    single-token pass per new token, greedy (or sampled at `temperature` > 0).

    A row is finished once it emits `eos_id` or `stop(row, its new ids)` is true; later positions of a finished
    row hold `eos_id` (or repeat nothing useful when None), and decoding ends when every row is finished."""
    batch, prompt_len = prompt_ids.shape
    out = prompt_ids.new_full((batch, max_new_tokens), eos_id if eos_id is not None else 0)
    if max_new_tokens == 0:
        return out
    cache = trunk.new_cache(batch, prompt_len + max_new_tokens)
    hidden = trunk(prompt_ids, cache)[:, -1:]
    done = torch.zeros(batch, dtype=torch.bool, device=prompt_ids.device)
    for i in range(max_new_tokens):
        logits = trunk.logits(hidden)[:, -1].float()
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            token = logits.argmax(-1)
        if eos_id is not None:
            token = token.masked_fill(done, eos_id)
        out[:, i] = token
        if eos_id is not None:
            done |= token == eos_id
        if stop is not None:
            for row in (~done).nonzero().flatten().tolist():
                done[row] = stop(row, out[row, : i + 1].tolist())
        if bool(done.all()) or i + 1 == max_new_tokens:
            break
        hidden = trunk(out[:, i: i + 1], cache)
    return out
