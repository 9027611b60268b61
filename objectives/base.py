"""The objective interface: what an objective is (`Objective`), the targets every objective derives from the
tokens (`future_targets`) and the token loss on full logits. The heads' machinery is in `objectives.heads`, the
memory-efficient losses in `objectives.fused`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from suite.errors import UsageError

IGNORE = -100
"""Target value that contributes nothing to a loss (F.cross_entropy's ignore_index)."""

Metrics = dict[str, torch.Tensor]

Drafter = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""draft(hidden, tokens) -> [B, n - 1] token ids: an objective's greedy drafts for self-speculative decoding.

tokens [B, C + 1] are every token decided so far: the trunk has read x_0 .. x_{C-1}, and x_C is the next-token head's
choice after them. hidden [B, m, D] is the trunk output at the positions it read since the previous call (C - m ..
C - 1; the whole prompt on the first call). The drafts are x_{C+1} .. x_{C+n-1}. A drafter keeps its own KV caches
between calls; the positions it is given never go back, so it never needs to be told about rejected drafts."""

PassDrafter = Callable[[torch.Tensor], torch.Tensor]
"""states(hidden [B, w, D]) -> [B, w, n - 1, D]: the draft heads' states (before the trunk's final norm and
unembedding) at every position t of a trunk pass, from x_{<=t} alone; the pass turns them into greedy drafts of
x_{t+2} .. x_{t+n} in the same matmul as its own logits. However many of the pass's positions decoding keeps, it
takes the drafts at the last one, and the next pass overwrites the heads' cache entries past it
(`Objective.pass_drafter`). Its `refresh()` reads the heads' weights again where it holds copies of them: decoding
calls it before every call that reuses the drafter."""

WindowDrafter = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""draft(hidden [B, w, D], known [B, w]) -> [B, n - 1]: greedy drafts of x_{p+2} .. x_{p+n} after a pass whose last
kept position is p, from the trunk output at the last w positions kept (p - w + 1 .. p) and the decided tokens
x_{p-w+2} .. x_{p+1}; w = n after the first call, which reads the whole prompt (`Objective.window_drafter`)."""

HEADWISE_VOCAB_RATIO = 8
"""`headwise=None` runs heads one at a time when vocab_size >= this x d_model (see `Objective.use_headwise`)."""


def future_targets(tokens: torch.Tensor, k: int, mask: torch.Tensor | None = None,
                   separator: int | None = None) -> torch.Tensor:
    """Targets for predicting x_{t+k} at position t: `tokens` shifted left by k, IGNORE where t+k runs past the
    end of the sequence or where `mask[t+k]` says that token is not a prediction target; and, in rows packed with
    several documents that each end with the `separator` token, where x_{t+k} lies in another document than x_t
    (the separator belongs to the document it ends; the token after it starts the next)."""
    assert k >= 1, k
    targets = torch.full_like(tokens, IGNORE)
    if k < tokens.shape[1]:
        future = tokens[:, k:]
        if mask is not None:
            future = future.masked_fill(~mask[:, k:], IGNORE)
        if separator is not None:
            ends = tokens == separator
            document = ends.cumsum(1) - ends.long()  # how many documents ended before each position
            future = future.masked_fill(document[:, k:] != document[:, :-k], IGNORE)
        targets[:, :-k] = future
    return targets


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the targets that are not IGNORE, and top-1 accuracy on them, from full logits.

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
    (so `spec()` can rebuild them), and build their heads in `attach`, which sees the trunk. Objectives that draft
    future tokens also define `draft_logits(trunk, input_ids) -> [B, T, n, V]`: drafts of x_{t+1..t+n} from
    x_{<=t} only, and `drafter`, which drafts the same tokens incrementally, with KV caches, for decoding."""

    name: ClassVar[str]
    n: int = 1
    """How many future tokens a position predicts: x_{t+1} .. x_{t+n}."""
    progress: float = 0.0
    """Fraction of training done, set by ObjectiveLM before each step (for loss-weight schedules)."""
    separator: int | None = None
    """The token that ends each document of rows packed with several (the data's `Task.document_separator`, set by
    ObjectiveLM): no target crosses it (`future`). None: each row is one document."""

    def future(self, tokens: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`future_targets` of the batch with this objective's document separator: every head's targets."""
        return future_targets(tokens, k, mask, self.separator)

    @classmethod
    def horizon_options(cls, n: int) -> dict | None:
        """The options that make this objective predict n tokens ahead (a sweep's `n` axis), or None if it has no
        horizon (NTP, future summary prediction): then the axis does not apply and the point is not repeated."""
        return None

    @property
    def logits_heads(self) -> int:
        """How many heads compute vocabulary logits through the shared unembedding (for analytic FLOPs)."""
        return self.n

    distills_trunk: ClassVar[bool] = False
    """The heads learn the trunk's own predictions (self-distillation): the trunk must be a trained model held
    fixed (`ObjectiveLM(freeze_trunk=True)`), or the heads' targets would feed back into what they are read from."""
    needs_prompts: ClassVar[bool] = False
    """The objective needs examples whose prompt is not a prediction target (teacherless blanks the answer)."""
    decoding: ClassVar[str] = "autoregressive"
    """How the trained model answers: "autoregressive" (token by token, the causal LM every checkpoint is) or
    "one_pass" (`one_pass_logits`: every answer token from the prompt alone, as teacherless training taught)."""

    def frozen_models(self) -> dict[str, tuple[str, dict]]:
        """The trained models this objective reads but never trains, which `attach` is handed by keyword: option
        name -> (checkpoint path, data settings the model must have been trained with), e.g. FSP-RevLM's
        {"reverse_lm": (path, {"reverse": True})}. An objective does no disk I/O: its caller loads them
        (`suite.checkpoints.attach`), or builds stand-ins of their shape where only shapes count."""
        return {}

    def attach(self, trunk, **frozen) -> None:
        """Build the objective's own modules for `trunk` (a `suite.model.Trunk`); called once, before training,
        with each of `frozen_models` loaded (a `Trunk`) under its option name."""

    def inputs(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """What the trunk reads of a batch: the tokens themselves, unless the objective hides some of them
        (teacherless replaces the answer by a dummy token)."""
        return tokens

    def hidden(self, trunk, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The trunk output [B, T, D] that `loss` reads: `trunk(inputs)`. An objective whose heads branch off below
        the trunk's last block says so here."""
        return trunk(self.inputs(tokens, mask))

    def head_logits(self, trunk, input_ids: torch.Tensor) -> torch.Tensor:
        """Every head that predicts tokens, as in training (teacher-forced): [B, T, heads, V], head k at t predicting
        x_{t+k}; by default the next-token head alone. For looking inside a model (`foresight probe`), not for
        decoding: a sequential module here reads the true next token, as it was trained to."""
        return trunk.logits(self.hidden(trunk, input_ids)).unsqueeze(2)

    def one_pass_logits(self, trunk, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Logits [B, max_new_tokens, V] of every answer token of prompts [B, P] from one trunk pass, for
        `decoding == "one_pass"` (max_new_tokens >= 1)."""
        raise NotImplementedError(f"{self.name} decodes {self.decoding}")

    def drafter(self, trunk, batch: int, max_len: int) -> Drafter | None:
        """A fresh `Drafter` for decoding `batch` sequences of up to `max_len` tokens, or None when the objective has
        no heads that predict tokens (future summary prediction predicts a summary, not tokens)."""
        return None

    def pass_drafter(self, trunk, batch: int, max_len: int, cursor) -> PassDrafter | None:
        """For static-shaped decoding (`suite.decoding.generate(graphs=True)`): a `PassDrafter` whose heads keep
        static KV caches at `cursor` (a `suite.model.Cursor`), run inside the trunk pass's CUDA graph; None where
        drafting needs the decided tokens (sequential modules: `window_drafter`, after the pass)."""
        return None

    def window_drafter(self, trunk, batch: int, max_len: int, cursor) -> WindowDrafter | None:
        """For static-shaped decoding where drafting needs the decided tokens (sequential modules): a
        `WindowDrafter`, run after each pass at one shape (its own CUDA graph), its caches static at `cursor`;
        None where the heads draft inside the pass (`pass_drafter`) or not at all."""
        return None

    def loss(self, trunk, hidden: torch.Tensor, tokens: torch.Tensor,
             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, Metrics]:
        """The training loss for `tokens` [B, T] whose trunk output is `hidden` [B, T, D], and metrics to log.

        `mask` [B, T] (bool) marks the tokens that count as prediction targets; None means all of them."""
        raise NotImplementedError

    def check_sequence_length(self, length: int) -> None:
        """Raise a UsageError if sequences of `length` tokens leave no target for the farthest prediction."""
        if self.n >= length:
            raise UsageError(f"{self.name} predicts {self.n} tokens ahead, too many for sequences of {length} "
                             f"tokens; allowed: n < {length}")

    def use_headwise(self, trunk) -> bool:
        """The objective's `headwise` setting; None means: run heads one at a time when the vocabulary is at least
        8x the model width, where each head's logits and their gradient outweigh its activations (there it saves a
        third of a step's memory at no cost in time; with a small vocabulary it saves nothing and costs 5-20%)."""
        setting = getattr(self, "headwise", None)
        if setting is not None:
            return bool(setting)
        return trunk.config.vocab_size >= HEADWISE_VOCAB_RATIO * trunk.config.d_model

    def head_params(self, trunk) -> list[torch.Tensor]:
        """What the heads read besides the trunk output: the objective's own parameters and the trunk's shared
        embedding, final norm and unembedding (each tensor once)."""
        shared = [*trunk.embed.parameters(), *trunk.final_norm.parameters(), *trunk.unembed.parameters()]
        return list({id(p): p for p in [*self.parameters(), *shared]}.values())

    def spec(self) -> dict:
        """Class path and constructor arguments, enough to rebuild this objective (stored in checkpoints)."""
        params = [name for name, p in inspect.signature(type(self).__init__).parameters.items()
                  if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                "init_args": {p: getattr(self, p) for p in params}}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.spec()["init_args"].items())
