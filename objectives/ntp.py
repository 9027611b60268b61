"""Next-token prediction: the cross-entropy every LM trains with, the baseline every objective is measured against."""

from __future__ import annotations

import torch

from objectives.base import Objective
from objectives.heads import head_losses, token_head


class NTP(Objective):
    """Next-token cross-entropy on the trunk's shared unembedding.

    It runs through `head_losses` like every multi-token objective, so an MTP objective at n = 1 is the same
    computation, and memory comparisons measure the objectives, not two code paths."""

    name = "ntp"

    def loss(self, trunk, hidden, tokens, mask=None):
        heads = [token_head(trunk, self.future(tokens, 1, mask), 1.0, "head_1")]
        return head_losses(hidden, heads, self.head_params(trunk))

    def draft_logits(self, trunk, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits of x_{t+1} from x_{<=t}, as [B, T, 1, V]: a one-token draft."""
        return trunk.logits(trunk(input_ids)).unsqueeze(2)

    def drafter(self, trunk, batch, max_len):
        """No drafts: speculative decoding with NTP is greedy decoding, one token per trunk pass."""
        return lambda hidden, tokens: tokens[:, :0]
