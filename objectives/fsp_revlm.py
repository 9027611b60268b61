"""Future summary prediction with a learned summary (Mahajan et al., arXiv 2510.14751): a right-to-left language
model, trained first with next-token prediction on reversed sequences (`foresight fit --data.reverse=true`), is
loaded frozen; its hidden state after reading the suffix x_{T-1}, ..., x_{t+2} (right to left) summarizes the
future beyond the next token. An auxiliary head on the forward model regresses that summary at position t from
x_{<=t} with a squared L2 loss, added to next-token prediction.

The summary is the reverse model's final-normed hidden state (what its unembedding reads), so its scale is fixed,
and the loss is the mean squared error per dimension: about 1 at initialisation (a norm's output has unit RMS,
the head's prediction is near 0) whatever the width, on the scale of the next-token loss. A sum over the d
dimensions (what foresight did first) is about d, 64 at `nano` and 512 at `small`, and swamped next-token
prediction."""

from __future__ import annotations

import torch
from torch import nn

from objectives.base import Metrics
from objectives.summary import FutureSummary
from suite.errors import UsageError


class FSPRevLM(FutureSummary):
    name = "fsp_revlm"

    def __init__(self, reverse_lm: str, loss_weight: float = 1.0, head_layers: int = 1, headwise: bool | None = None):
        """
        Args:
            reverse_lm: Checkpoint of a right-to-left model: `foresight fit --data.reverse=true` on the same data.
            loss_weight: Weight of the summary regression loss (a mean squared error per dimension) added to
                next-token prediction.
            head_layers: Transformer blocks in the auxiliary head (then an RMSNorm and a projection to the
                reverse model's width).
            headwise: Run heads one at a time (forward and backward) so only one head's logits and activations
                are alive; None decides by shape (`Objective.use_headwise`), False builds one graph over all heads.
        """
        super().__init__(loss_weight, head_layers, headwise)
        self.reverse_lm = str(reverse_lm)

    def frozen_models(self) -> dict[str, tuple[str, dict]]:
        return {"reverse_lm": (self.reverse_lm, {"reverse": True})}

    def attach(self, trunk, reverse_lm=None, **frozen) -> None:
        if reverse_lm is None:
            raise UsageError(f"{self.name} needs its reverse model, loaded from reverse_lm {self.reverse_lm!r} "
                             "(suite.checkpoints.attach); allowed: attach(trunk, reverse_lm=Trunk)")
        if reverse_lm.config.vocab_size != trunk.config.vocab_size:
            raise UsageError(f"{self.name} reverse_lm {self.reverse_lm!r} has vocabulary size "
                             f"{reverse_lm.config.vocab_size}; allowed: the model's own, {trunk.config.vocab_size}")
        super().attach(trunk)
        # frozen by requires_grad alone: the trunk has no layer that behaves differently in eval mode
        self.reverse = reverse_lm.to(trunk.embed.weight.device).requires_grad_(False)
        d = trunk.config.d_model
        self.out = nn.Sequential(nn.RMSNorm(d, eps=trunk.config.norm_eps),
                                 nn.Linear(d, reverse_lm.config.d_model, bias=False)).to(trunk.embed.weight.device)
        trunk.init_weights(self.out[1])

    @property
    def logits_heads(self) -> int:
        return 1  # next-token logits; the summary head regresses a vector

    @torch.no_grad()
    def summaries(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets [B, T, d_rev]: at t, the reverse model's state after reading x_{T-1} .. x_{t+2}; and the
        positions [B, T] (bool) that have a suffix and a next-token target."""
        reversed_states = self.reverse.final_norm(self.reverse(tokens.flip(1)))
        from_here = reversed_states.flip(1)  # from_here[:, i] summarizes x_i .. x_{T-1}
        targets = torch.zeros_like(from_here)
        targets[:, :-2] = from_here[:, 2:]
        valid = torch.zeros_like(tokens, dtype=torch.bool)
        valid[:, :-2] = True
        if mask is not None:
            valid &= self.future(tokens, 1, mask) >= 0
        return targets, valid

    def summary_loss(self, trunk, tokens, mask):
        targets, valid = self.summaries(tokens, mask)

        def loss(state: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
            predicted = self.out(state).float()
            count = valid.sum().clamp(min=1)
            value = ((predicted - targets.float()).pow(2).mean(-1) * valid).sum() / count
            with torch.no_grad():
                cosine = (torch.cosine_similarity(predicted, targets.float(), dim=-1) * valid).sum() / count
            return self.loss_weight * value, {"loss/fsp": value.detach(), "cos/fsp": cosine}

        return loss

    def summary(self, trunk, input_ids: torch.Tensor) -> torch.Tensor:
        """The auxiliary head's predicted summary [B, T, d_rev] of x_{t+2..}, from x_{<=t}."""
        return self.out(self.summary_state(trunk, input_ids))
