"""Future summary prediction (Mahajan et al., "Beyond Multi-Token Prediction: Pretraining LLMs with Future
Summaries", arXiv 2510.14751): next-token prediction plus one auxiliary head that predicts, at position t, a
summary of the future beyond the next token, x_{t+2} onwards. What the summary is and how a prediction of it is
scored is each variant's (`fsp_bow`: a bag of the next tau tokens; `fsp_revlm`: a right-to-left model's state)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from objectives.base import Metrics, Objective
from objectives.heads import Head, head_losses, run_blocks, token_head
from suite.errors import check_range


class FutureSummary(Objective):
    """The shared shape of both variants: `head_layers` transformer blocks on the trunk's output (`self.head`),
    whose output `summary_loss` scores against the summary, weighted `loss_weight`, beside the next-token loss."""

    def __init__(self, loss_weight: float = 1.0, head_layers: int = 1, headwise: bool | None = None):
        super().__init__()
        check_range(f"{self.name} loss_weight", loss_weight, 0.0)
        check_range(f"{self.name} head_layers", head_layers, 1)
        self.loss_weight, self.head_layers, self.headwise = loss_weight, head_layers, headwise

    def attach(self, trunk, **frozen) -> None:
        self.head = nn.ModuleList(trunk.make_block() for _ in range(self.head_layers))

    def check_sequence_length(self, length: int) -> None:
        check_range(f"{self.name} needs sequences of at least 3 tokens; sequence length", length, 3)

    def summary_loss(self, trunk, tokens: torch.Tensor,
                     mask: torch.Tensor | None) -> Callable[[torch.Tensor], tuple[torch.Tensor, Metrics]]:
        """The summary head's loss of its blocks' output [B, T, D], already weighted, with metrics (`loss/fsp`
        unweighted), for the summaries of this batch."""
        raise NotImplementedError

    def summary_state(self, trunk, input_ids: torch.Tensor) -> torch.Tensor:
        """The summary head's blocks' output [B, T, D] for x_{<=t}."""
        return run_blocks(trunk, self.head, trunk(input_ids))

    def loss(self, trunk, hidden, tokens, mask=None):
        summary = Head(self.summary_loss(trunk, tokens, mask),
                       lambda state, previous: run_blocks(trunk, self.head, state), "fsp")
        heads = [token_head(trunk, self.future(tokens, 1, mask), 1.0, "head_1"), summary]
        return head_losses(hidden, heads, self.head_params(trunk), headwise=self.use_headwise(trunk))
