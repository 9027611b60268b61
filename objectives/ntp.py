"""Next-token prediction: the cross-entropy every LM trains with, and the baseline every objective is measured against."""

from __future__ import annotations

import torch

from objectives.base import Objective, future_targets, token_loss


class NTP(Objective):
    """Next-token cross-entropy on the trunk's shared unembedding."""

    name = "ntp"

    def loss(self, trunk, hidden, tokens, mask=None):
        loss, accuracy = token_loss(trunk.logits(hidden), future_targets(tokens, 1, mask))
        return loss, {"loss/head_1": loss.detach(), "acc/head_1": accuracy}

    def draft_logits(self, trunk, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits of x_{t+1} from x_{<=t}, as [B, T, 1, V]: a one-token draft."""
        return trunk.logits(trunk(input_ids)).unsqueeze(2)
