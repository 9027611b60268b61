"""Self-distilled multi-token heads: parallel MTP's heads (`ParallelMTP`), trained to predict what the model itself
would say rather than what the data says. Head k at position t learns the trunk's own greedy token for x_{t+k},
the argmax of its next-token logits at t + k - 1 (or, with `target="distribution"`, their whole distribution, by
KL divergence); the next-token head keeps the data's x_{t+1}.

This is what speculative decoding rewards: a draft is accepted when it equals the trunk's greedy token, not the
data's (Medusa's self-distillation, Cai et al. 2024; online self-distillation of an existing LLM into a multi-token
predictor, Apple 2026). The teacher is the trunk itself, computed under no_grad in the same pass, so no second copy
of the model is held, and so the trunk must be held fixed (`--model.freeze_trunk=true`, heads on a pretrained
model from `--model.init_from`): it is then the model the heads will draft for. Trained jointly, the heads'
targets would feed back into the trunk they are read from (on the star graph from scratch, its next-token loss
ended 2.6x NTP's after 250 steps), so `ObjectiveLM` refuses that.
The targets are teacher-forced: the trunk's greedy token after the data's prefix x_{<=t+k-1}, which is the token
a draft must match whenever the drafts before it were accepted and the data agreed with them; on the model's own
greedy text the two are the same."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from objectives.base import IGNORE
from objectives.heads import Head, head_losses, token_head
from objectives.parallel_mtp import ParallelMTP
from suite.errors import check_choice


class SelfDistillMTP(ParallelMTP):
    name = "self_distill_mtp"
    distills_trunk = True
    default_layout = "stacked"  # heads on the pretrained trunk's output, as Medusa's
    targets_choices = ("greedy", "distribution")

    def __init__(self, n: int = 2, head_layers: int = 1, target: Literal["greedy", "distribution"] = "greedy",
                 headwise: bool | None = None):
        """
        Args:
            n: Tokens predicted per position (heads); head 1 is next-token prediction on the data.
            head_layers: Transformer blocks in each extra head.
            target: What heads 2..n learn: the trunk's greedy token (cross-entropy on its argmax) or its whole
                next-token distribution (KL divergence from it).
            headwise: As ParallelMTP's.
        """
        super().__init__(n=n, head_layers=head_layers, headwise=headwise)
        check_choice(f"{self.name} target", target, self.targets_choices)
        self.target = target

    @torch.no_grad()
    def teacher_logits(self, trunk, hidden: torch.Tensor) -> torch.Tensor:
        """The trunk's own next-token logits [B, T, V] on the batch, without a graph: the teacher."""
        first = self._first(trunk)
        state = hidden if first is None else first(hidden, None)
        return trunk.logits(state).float()

    def distilled_heads(self, trunk, hidden, tokens, mask) -> list[Head]:
        """Head 1 on the data's x_{t+1}; head k >= 2 on the teacher's logits at t + k - 1, where x_{t+k} is a
        target of the data's own (in range, not masked out, in the same document)."""
        teacher = self.teacher_logits(trunk, hidden)
        greedy = teacher.argmax(-1) if self.target == "greedy" else None
        heads = [token_head(trunk, self.future(tokens, 1, mask), self.weights[0], "head_1", self._first(trunk))]
        for k in range(2, self.n + 1):
            valid = self.future(tokens, k, mask) != IGNORE
            step, label, weight = self._step(trunk, k), f"head_{k}", self.weights[k - 1]
            if greedy is not None:
                targets = torch.full_like(tokens, IGNORE)
                targets[:, : tokens.shape[1] - k + 1] = greedy[:, k - 1:]
                heads.append(token_head(trunk, targets.masked_fill(~valid, IGNORE), weight, label, step))
            else:
                heads.append(distribution_head(trunk, teacher[:, k - 1:], valid, weight, label, step))
        return heads

    def loss(self, trunk, hidden, tokens, mask=None):
        return head_losses(hidden, self.distilled_heads(trunk, hidden, tokens, mask), self.head_params(trunk),
                           chained=self.chained, headwise=self.use_headwise(trunk) and self.target == "greedy")


def distribution_head(trunk, teacher: torch.Tensor, valid: torch.Tensor, weight: float, label: str, step) -> Head:
    """A head whose state at t learns the teacher's distribution `teacher[:, t]` [B, T - k + 1, V] by
    KL(teacher || head), averaged over the `valid` positions; metrics as `token_head`'s (the loss is the KL, the
    accuracy the share of positions whose argmax agrees with the teacher's)."""

    def loss(state: torch.Tensor):
        length = teacher.shape[1]
        logits = trunk.logits(state[:, :length]).float()
        keep = valid[:, :length]
        count = keep.sum().clamp(min=1)
        kl = F.kl_div(logits.log_softmax(-1), teacher.log_softmax(-1), log_target=True, reduction="none").sum(-1)
        mean = (kl * keep).sum() / count
        accuracy = ((logits.argmax(-1) == teacher.argmax(-1)) & keep).sum() / count
        return weight * mean, {f"loss/{label}": mean.detach(), f"acc/{label}": accuracy.detach()}

    return Head(loss, step, label)
