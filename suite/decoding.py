"""Decoding with the trunk's KV cache."""

from __future__ import annotations

import torch

from suite.model import Trunk


@torch.inference_mode()
def greedy(trunk: Trunk, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy continuation [B, max_new_tokens] of equal-length prompts [B, P]: one prefill pass, then one cached
    single-token pass per new token."""
    batch, prompt_len = prompt_ids.shape
    out = prompt_ids.new_empty(batch, max_new_tokens)
    if max_new_tokens == 0:
        return out
    cache = trunk.new_cache(batch, prompt_len + max_new_tokens)
    hidden = trunk(prompt_ids, cache)[:, -1:]
    for i in range(max_new_tokens):
        out[:, i] = trunk.logits(hidden)[:, -1].argmax(-1)
        if i + 1 < max_new_tokens:
            hidden = trunk(out[:, i: i + 1], cache)
    return out
