"""Parallel multi-token prediction (Gloeckle et al., "Better & Faster Large Language Models via Multi-token
Prediction", ICML 2024): n heads on the shared trunk output, head k predicts x_{t+k}, all through the trunk's
shared final norm and unembedding.

Head 1 is the trunk's own next-token head, so ParallelMTP(n=1) is NTP exactly and every checkpoint stays a plain
causal LM; heads 2..n are `head_layers` transformer blocks each, built like the trunk's."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from objectives.base import Head, Objective, future_targets, head_losses, run_blocks, token_head
from suite.errors import UsageError, check_range


class ParallelMTP(Objective):
    name = "parallel_mtp"
    chained = False

    def __init__(self, n: int = 2, head_layers: int = 1, loss_reduction: Literal["sum", "mean"] = "sum",
                 head_weights: list[float] | None = None, match_params: bool = False, headwise: bool | None = None):
        """
        Args:
            n: Tokens predicted per position (heads); n = 1 is next-token prediction.
            head_layers: Transformer blocks in each extra head.
            loss_reduction: Sum the heads' losses (as Gloeckle et al.) or average them.
            head_weights: One weight per head (overrides loss_reduction), e.g. [1, 0.5, 0.25, 0.125].
            match_params: Remove n - 1 trunk blocks so the total matches NTP's parameter count (Gloeckle et al.'s
                comparison); by default the heads are added on top of the trunk.
            headwise: Run heads one at a time (forward and backward) so only one head's logits and activations
                are alive; None decides by shape (`Objective.use_headwise`), False builds one graph over all heads.
        """
        super().__init__()
        check_range(f"{self.name} n", n, 1)
        check_range(f"{self.name} head_layers", head_layers, 1)
        if head_weights is not None:
            if len(head_weights) != n:
                raise UsageError(f"{self.name} head_weights has {len(head_weights)} entries; allowed: one per head, "
                                 f"n={n}")
            if min(head_weights) < 0:
                raise UsageError(f"{self.name} head_weights={head_weights} has a negative weight; allowed: >= 0")
        self.n, self.head_layers, self.loss_reduction = n, head_layers, loss_reduction
        self.head_weights, self.match_params, self.headwise = head_weights, match_params, headwise

    @classmethod
    def horizon_options(cls, n: int) -> dict:
        return {"n": n}

    @property
    def weights(self) -> list[float]:
        if self.head_weights is not None:
            return [float(w) for w in self.head_weights]
        return [1.0 / self.n if self.loss_reduction == "mean" else 1.0] * self.n

    def attach(self, trunk) -> None:
        if self.match_params:
            if self.n - 1 >= len(trunk.blocks):
                raise UsageError(f"{self.name} match_params with n={self.n} would remove {self.n - 1} of the trunk's "
                                 f"{len(trunk.blocks)} blocks; allowed: n <= {len(trunk.blocks)}")
            trunk.blocks = trunk.blocks[: len(trunk.blocks) - (self.n - 1)]
        self.heads = nn.ModuleList(
            nn.ModuleList(trunk.make_block() for _ in range(self.head_layers)) for _ in range(self.n - 1))

    def _step(self, trunk, k: int):
        """Head k's state (k >= 2) from the trunk output and head k-1's state; with a KV cache of the head's
        blocks, at the positions after the cached ones."""
        blocks = self.heads[k - 2]
        return lambda hidden, previous, cache=None: run_blocks(trunk, blocks, hidden, cache)

    def targets(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Head k's targets [B, T]: x_{t+k}, IGNORE past the end or where the mask rules the token out."""
        return [future_targets(tokens, k, mask) for k in range(1, self.n + 1)]

    def _heads(self, trunk, tokens, mask) -> list[Head]:
        return [token_head(trunk, targets, weight, f"head_{k}", None if k == 1 else self._step(trunk, k))
                for k, (targets, weight) in enumerate(zip(self.targets(tokens, mask), self.weights), start=1)]

    def loss(self, trunk, hidden, tokens, mask=None):
        return head_losses(hidden, self._heads(trunk, tokens, mask), self.head_params(trunk),
                           chained=self.chained, headwise=self.use_headwise(trunk))

    def draft_logits(self, trunk, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = trunk(input_ids)
        drafts, state = [], hidden
        for k in range(1, self.n + 1):
            state = hidden if k == 1 else self._step(trunk, k)(hidden, state)
            drafts.append(trunk.logits(state))
        return torch.stack(drafts, dim=2)

    def drafter(self, trunk, batch, max_len):
        """Heads 2..n at the last position read, each over a KV cache of its blocks: the positions a drafter is given
        are all kept (see `Drafter`), so the caches never roll back."""
        steps = [self._step(trunk, k) for k in range(2, self.n + 1)]
        caches = [trunk.new_cache(batch, max_len, self.head_layers) for _ in steps]

        def draft(hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
            state, drafts = hidden, []
            for step, cache in zip(steps, caches):
                state = step(hidden, state, cache)
                drafts.append(trunk.logits(state[:, -1]).argmax(-1))
            return torch.stack(drafts, dim=1) if drafts else tokens[:, :0]

        return draft
