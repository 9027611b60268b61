"""Future summary prediction with a hand-crafted summary (Mahajan et al., "Beyond Multi-Token Prediction:
Pretraining LLMs with Future Summaries", arXiv 2510.14751): next-token prediction plus an auxiliary head that
predicts, at position t, the multi-hot bag of the tokens x_{t+2} .. x_{t+tau} (which tokens come, not where),
with a reweighted binary cross-entropy, a weighted mean over the vocabulary:

    L_bow(t) = sum_v w(v) [softplus(z_v) - a_v z_v] / sum_v w(v),  a_v = 1 if v is in the window

The weights are tf-idf-like. The window's term frequency is 0 or 1 (a multi-hot target), and w(v) is the
smoothed inverse document frequency of v over the batch's sequences (scikit-learn's smooth idf),
w(v) = ln((1 + N) / (1 + df(v))) + 1, with N sequences and df(v) of them holding v as a target token, over the
tokens that are targets somewhere in the batch (df(v) > 0); a token that is never a target weighs 0: frequent
tokens weigh less, and tokens no window can hold (padding, the prompt's separators) weigh nothing.
weighting="none" sets w = 1 on the same tokens.

The mean keeps the auxiliary loss on the scale of next-token prediction whatever the vocabulary: ln 2 at
initialisation, where every logit is near 0, against ln V for the next token. The paper's own normalisation was not
available to us; a sum over the vocabulary (what foresight did first) is V ln 2 at initialisation, 17x the
next-token loss on the star graph, and trained the trunk on the bag-of-words loss alone."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from objectives.base import IGNORE, Metrics
from objectives.fused import fused_linear_loss
from objectives.summary import FutureSummary
from suite.errors import check_range


class FSPBoW(FutureSummary):
    name = "fsp_bow"

    def __init__(self, tau: int = 8, weighting: Literal["tfidf", "none"] = "tfidf", loss_weight: float = 1.0,
                 head_layers: int = 1, headwise: bool | None = None):
        """
        Args:
            tau: The window's end: the bag holds x_{t+2} .. x_{t+tau} (tau >= 2).
            weighting: Per-token weights of the binary cross-entropy's mean over the vocabulary: "tfidf" (smoothed idf
                over the batch) or "none" (uniform); tokens that are no target in the batch weigh 0 either way.
            loss_weight: Weight of the bag-of-words loss added to next-token prediction (the paper adds it as is).
            head_layers: Transformer blocks in the auxiliary head, which then uses the shared final norm and
                unembedding for its vocabulary logits.
            headwise: Run heads one at a time (forward and backward) so only one head's logits and activations
                are alive; None decides by shape (`Objective.use_headwise`), False builds one graph over all heads.
        """
        super().__init__(loss_weight, head_layers, headwise)
        check_range(f"{self.name} tau", tau, 2)
        self.tau, self.weighting = tau, weighting

    @property
    def logits_heads(self) -> int:
        return 2  # next-token and bag-of-words logits

    def bag(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The window x_{t+2} .. x_{t+tau} as ids [B, T, tau-1] with IGNORE where a slot runs past the end, is not
        a target under `mask`, or repeats an earlier token of the same window; and the positions [B, T] (bool)
        whose window holds at least one token."""
        window = torch.stack([self.future(tokens, k, mask) for k in range(2, self.tau + 1)], dim=-1)
        ordered, _ = window.sort(dim=-1)
        repeat = torch.zeros_like(ordered, dtype=torch.bool)
        repeat[..., 1:] = ordered[..., 1:] == ordered[..., :-1]
        window = ordered.masked_fill(repeat | (ordered < 0), IGNORE)
        return window, (window >= 0).any(dim=-1)

    def token_weights(self, tokens: torch.Tensor, mask: torch.Tensor | None, vocab_size: int) -> torch.Tensor:
        """w(v) / sum_v w(v) for every vocabulary entry [V]: the weights of the mean, 0 where v is no target."""
        targets = tokens if mask is None else tokens.masked_fill(~mask, vocab_size)  # non-targets: a spare column
        present = torch.zeros(tokens.shape[0], vocab_size + 1, dtype=torch.bool, device=tokens.device)
        df = present.scatter_(1, targets, True)[:, :vocab_size].sum(dim=0).float()
        if self.weighting == "none":
            weights = (df > 0).float()
        else:
            weights = (torch.log((1 + tokens.shape[0]) / (1 + df)) + 1) * (df > 0)
        return weights / weights.sum().clamp(min=1e-12)

    def bow_loss(self, x: torch.Tensor, weight: torch.Tensor, window: torch.Tensor, valid: torch.Tensor,
                 token_weights: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """`scale` times the mean over valid positions of sum_v w(v) [softplus(z_v) - a_v z_v] for the logits
        z = x @ weight.T (w from `token_weights`, which sum to 1), and the unscaled mean (detached), chunk by chunk
        (`fused_linear_loss`), never a dense multi-hot tensor. x: [..., D] normed, window from `bag`."""
        x, window, valid = x.reshape(-1, x.shape[-1]), window.reshape(-1, window.shape[-1]), valid.reshape(-1)
        slots, present = window.clamp(min=0), (window >= 0)

        def weighted_bce(logits: torch.Tensor, rows: slice, gradient: bool):
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 sigmoids lose too much
            chosen, here, w = slots[rows], present[rows].to(logits.dtype), token_weights.to(logits.dtype)
            per_position = F.softplus(logits) @ w - (logits.gather(1, chosen) * w[chosen] * here).sum(-1)
            if not gradient:
                return per_position, logits.new_zeros(()), None
            # d/dz of w [softplus(z) - a z] = w [sigmoid(z) - a], in the logits' memory
            return per_position, logits.new_zeros(()), logits.sigmoid_().scatter_add_(1, chosen, -here).mul_(w)

        loss, mean, _ = fused_linear_loss(x, weight, weighted_bce, valid, scale)
        return loss, mean

    def summary_loss(self, trunk, tokens, mask):
        window, valid = self.bag(tokens, mask)
        weights = self.token_weights(tokens, mask, trunk.config.vocab_size)

        def loss(state: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
            value, mean = self.bow_loss(trunk.final_norm(state), trunk.unembed.weight, window, valid, weights,
                                        self.loss_weight)
            return value, {"loss/fsp": mean}

        return loss

    def summary_logits(self, trunk, input_ids: torch.Tensor) -> torch.Tensor:
        """The auxiliary head's logits [B, T, V] of which tokens come in x_{t+2..t+tau}, from x_{<=t}."""
        return trunk.logits(self.summary_state(trunk, input_ids))
