"""The objective interface and the pieces every objective shares: shifted targets and the token loss."""

from __future__ import annotations

import inspect
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100
"""Target value that contributes nothing to a loss (F.cross_entropy's ignore_index)."""


def future_targets(tokens: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Targets for predicting x_{t+k} at position t: `tokens` shifted left by k, IGNORE where t+k runs past the
    end of the sequence or where `mask[t+k]` says that token is not a prediction target."""
    assert k >= 1, k
    targets = torch.full_like(tokens, IGNORE)
    if k < tokens.shape[1]:
        future = tokens[:, k:]
        if mask is not None:
            future = future.masked_fill(~mask[:, k:], IGNORE)
        targets[:, :-k] = future
    return targets


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the targets that are not IGNORE, and top-1 accuracy on them.

    A batch with no targets gives loss 0 (still attached to the graph) rather than NaN."""
    flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    valid = flat_targets != IGNORE
    count = valid.sum().clamp(min=1)
    loss = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE, reduction="sum") / count
    with torch.no_grad():
        accuracy = ((flat_logits.argmax(-1) == flat_targets) & valid).sum() / count
    return loss, accuracy


class Objective(nn.Module):
    """A training objective: owns its extra heads, builds its targets from the token batch, returns its loss.

    Subclasses set `name` (the registry key), store every constructor argument as an attribute of the same name
    (so `spec()` can rebuild them), and build their heads in `attach`, which sees the trunk."""

    name: ClassVar[str]
    n: int = 1
    """How many future tokens a position predicts: x_{t+1} .. x_{t+n}."""

    def attach(self, trunk) -> None:
        """Build the objective's own modules for `trunk` (a `suite.model.Trunk`); called once, before training."""

    def loss(self, trunk, hidden: torch.Tensor, tokens: torch.Tensor,
             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss for `tokens` [B, T] whose trunk output is `hidden` [B, T, D], and metrics to log.

        `mask` [B, T] (bool) marks the tokens that count as prediction targets; None means all of them."""
        raise NotImplementedError

    def spec(self) -> dict:
        """Class path and constructor arguments, enough to rebuild this objective (stored in checkpoints)."""
        params = [name for name, p in inspect.signature(type(self).__init__).parameters.items()
                  if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                "init_args": {p: getattr(self, p) for p in params}}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.spec()["init_args"].items())
