"""Parallel multi-token prediction (Gloeckle et al., "Better & Faster Large Language Models via Multi-token
Prediction", ICML 2024): n heads on a shared trunk, head k predicts x_{t+k}, all through the trunk's shared final
norm and unembedding. The next-token head is always the trunk itself (every checkpoint stays a plain causal LM);
heads 2..n read the trunk's state after `branch_layer` of its blocks and run `head_layers` blocks of their own:

    siblings  (the default, Gloeckle et al.'s) branch_layer = n_layer - head_layers: every head, the next-token head
              included, is its own `head_layers` blocks on a shared trunk (head 1's are the trunk's last ones)
    stacked   branch_layer = n_layer: heads 2..n sit on the very state the next-token head unembeds, each one
              `head_layers` blocks deeper than it
    any other branch_layer in 0 .. n_layer, e.g. 1 with head_layers = 0: a linear head off the first block's
              residual (Huang et al. 2026's theory model, where the goal-attending circuit must form in the trunk)

head_layers = 0 makes each extra head a linear readout (a D x D map of its own, the identity at the start) through
the shared final norm and unembedding. ParallelMTP(n=1) is NTP exactly, whatever the layout."""

from __future__ import annotations

import weakref
from typing import Literal

import torch
from torch import nn

from objectives.base import Objective
from objectives.heads import Head, Readout, head_losses, run_blocks, token_head
from objectives.stack import refresh, stack_blocks
from suite.errors import UsageError, check_choice, check_range


class ParallelMTP(Objective):
    name = "parallel_mtp"
    chained = False
    default_layout = "siblings"

    def __init__(self, n: int = 2, head_layers: int = 1, loss_reduction: Literal["sum", "mean"] = "sum",
                 head_weights: list[float] | None = None, match_params: bool = False, headwise: bool | None = None,
                 layout: Literal["siblings", "stacked"] | None = None, branch_layer: int | None = None):
        """
        Args:
            n: Tokens predicted per position (heads); n = 1 is next-token prediction.
            head_layers: Transformer blocks in each extra head; 0: a linear readout (a D x D map of its own)
                through the shared final norm and unembedding.
            loss_reduction: Sum the heads' losses (as Gloeckle et al.) or average them.
            head_weights: One weight per head (overrides loss_reduction), e.g. [1, 0.5, 0.25, 0.125].
            match_params: Remove n - 1 trunk blocks so the total matches NTP's parameter count (Gloeckle et al.'s
                comparison); by default the heads are added on top of the trunk.
            headwise: Run heads one at a time (forward and backward) so only one head's logits and activations
                are alive; None decides by shape (`Objective.use_headwise`), False builds one graph over all heads.
            layout: Where the extra heads attach, by name: "siblings" (Gloeckle et al.: after n_layer - head_layers
                trunk blocks, beside the next-token head's own last head_layers blocks) or "stacked" (on the trunk
                output, after all n_layer blocks); None: the objective's default (parallel MTP: siblings; causal
                MTP: stacked). branch_layer, where given, says it instead.
            branch_layer: How many trunk blocks the extra heads read after (0 .. n_layer: 0 reads the embeddings);
                None: as the layout says.
        """
        super().__init__()
        layout = layout or self.default_layout
        check_choice(f"{self.name} layout", layout, ("siblings", "stacked"))
        check_range(f"{self.name} n", n, 1)
        check_range(f"{self.name} head_layers", head_layers, 0)
        if branch_layer is not None:
            check_range(f"{self.name} branch_layer", branch_layer, 0)
        if match_params and head_layers == 0:
            raise UsageError(f"{self.name} match_params removes a trunk block per extra head, and head_layers=0 heads "
                             "have no block; allowed: match_params with head_layers >= 1")
        if head_weights is not None:
            if len(head_weights) != n:
                raise UsageError(f"{self.name} head_weights has {len(head_weights)} entries; allowed: one per head, "
                                 f"n={n}")
            if min(head_weights) < 0:
                raise UsageError(f"{self.name} head_weights={head_weights} has a negative weight; allowed: >= 0")
        self.n, self.head_layers, self.loss_reduction = n, head_layers, loss_reduction
        self.head_weights, self.match_params, self.headwise, self.layout = head_weights, match_params, headwise, layout
        self.branch_layer = branch_layer

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
        blocks = len(trunk.blocks)
        if self.n > 1 and self.branch_layer is not None and self.branch_layer > blocks:
            raise UsageError(f"{self.name} branch_layer={self.branch_layer} is past the trunk's {blocks} blocks; "
                             f"allowed: 0 .. {blocks}")
        if self.n > 1 and self.branch_layer is None and self.layout == "siblings" and self.head_layers > blocks:
            raise UsageError(f"{self.name} layout=siblings needs the trunk's last head_layers={self.head_layers} "
                             f"blocks as the next-token head, and the trunk has {blocks}; allowed: "
                             f"head_layers <= {blocks}")
        self.heads = nn.ModuleList(self._new_head(trunk) for _ in range(self.n - 1))

    def _new_head(self, trunk) -> nn.ModuleList:
        if self.head_layers == 0:
            return nn.ModuleList([Readout(trunk.config.d_model).to(trunk.embed.weight)])
        return nn.ModuleList(trunk.make_block() for _ in range(self.head_layers))

    def branch_depth(self, trunk) -> int:
        """How many trunk blocks the heads share: `branch_layer`, or as the layout says (all of them when stacked;
        with siblings, all but the last `head_layers`, which are the next-token head); all of them when n = 1."""
        blocks = len(trunk.blocks)
        if self.n == 1:
            return blocks
        if self.branch_layer is not None:
            return self.branch_layer
        return blocks - (self.head_layers if self.layout == "siblings" else 0)

    def hidden(self, trunk, tokens, mask=None):
        return trunk(self.inputs(tokens, mask), depth=self.branch_depth(trunk))

    def head_params(self, trunk):
        """With siblings, the next-token head's blocks (the trunk's last) are read inside the heads too."""
        own = list(trunk.blocks[self.branch_depth(trunk):].parameters())
        return list({id(p): p for p in [*super().head_params(trunk), *own]}.values())

    def _first(self, trunk):
        """The next-token head's state from the shared state: the trunk's remaining blocks (none when stacked)."""
        depth = self.branch_depth(trunk)
        if depth == len(trunk.blocks):
            return None
        return lambda hidden, previous: run_blocks(trunk, trunk.blocks[depth:], hidden)

    def _step(self, trunk, k: int):
        """Head k's state (k >= 2) from the shared state and head k-1's state; with a KV cache of the head's
        blocks, at the positions after the cached ones."""
        blocks = self.heads[k - 2]
        return lambda hidden, previous, cache=None: run_blocks(trunk, blocks, hidden, cache)

    def targets(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Head k's targets [B, T]: x_{t+k}, IGNORE past the end or where the mask rules the token out."""
        return [self.future(tokens, k, mask) for k in range(1, self.n + 1)]

    def _heads(self, trunk, tokens, mask) -> list[Head]:
        return [token_head(trunk, targets, weight, f"head_{k}", self._first(trunk) if k == 1 else self._step(trunk, k))
                for k, (targets, weight) in enumerate(zip(self.targets(tokens, mask), self.weights), start=1)]

    def loss(self, trunk, hidden, tokens, mask=None):
        return head_losses(hidden, self._heads(trunk, tokens, mask), self.head_params(trunk),
                           chained=self.chained, headwise=self.use_headwise(trunk))

    def head_logits(self, trunk, input_ids: torch.Tensor) -> torch.Tensor:
        return self.draft_logits(trunk, input_ids)  # the heads read x_{<=t} alone: their drafts are as trained

    def draft_logits(self, trunk, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden(trunk, input_ids)
        first = self._first(trunk)
        drafts, state = [], hidden
        for k in range(1, self.n + 1):
            if k == 1:
                state = hidden if first is None else first(hidden, None)
            else:
                state = self._step(trunk, k)(hidden, state)
            drafts.append(trunk.logits(state))
        return torch.stack(drafts, dim=2)

    def drafter(self, trunk, batch, max_len):
        """Heads 2..n at the last position read, each over a KV cache of its blocks: the positions a drafter is given
        are all kept (see `Drafter`), so the caches never roll back. Their logits are one matmul over every head."""
        states = self._states_at(trunk, batch, max_len)
        return lambda hidden, tokens: trunk.logits(states(hidden)[:, -1]).argmax(-1)

    def pass_drafter(self, trunk, batch, max_len, cursor):
        return self._states_at(trunk, batch, max_len, cursor)

    def _stacked_heads(self) -> list[nn.Module]:
        """Heads 2..n stacked layer by layer (`objectives.stack`), kept for later drafters on the same device and
        dtype (not a submodule: no state of the objective's), their weights read again where the heads changed."""
        weight = next(self.heads.parameters())
        key = (weight.device, weight.dtype)
        if getattr(self, "_stacks", (None,))[0] != key:
            self._stacks = (key, [stack_blocks([head[layer] for head in self.heads])
                                  for layer in range(len(self.heads[0]))])
        for layer in self._stacks[1]:
            refresh(layer)
        return self._stacks[1]

    def _states_at(self, trunk, batch, max_len, cursor=None):
        """states(hidden [B, m, D]) -> heads 2..n's states [B, m, n - 1, D] at every position the trunk just read,
        over KV caches of their blocks (static-shaped at `cursor`, where given). Parallel heads all read the shared
        state, so they run side by side as one stacked block per layer (`objectives.stack`): the kernels of one
        head, whatever n is; `states.refresh()` reads the heads' weights into the stack again."""
        shared = BranchState(trunk, self.branch_depth(trunk))
        heads = self.n - 1
        if self.chained or heads < 2:
            steps = [self._step(trunk, k) for k in range(2, self.n + 1)]
            caches = [trunk.new_cache(batch, max_len, self.head_layers, cursor) for _ in steps]

            def states(hidden: torch.Tensor) -> torch.Tensor:
                hidden = shared(hidden)
                state, every = hidden, []
                for step, cache in zip(steps, caches):
                    state = step(hidden, state, cache)
                    every.append(state)
                if not every:  # n = 1
                    return hidden.new_zeros(hidden.shape[:2] + (0, hidden.shape[2]))
                return torch.stack(every, dim=2)

            states.refresh = lambda: None
        else:
            layers = self._stacked_heads()
            cache = trunk.new_cache(heads * batch, max_len, self.head_layers, cursor)

            def states(hidden: torch.Tensor) -> torch.Tensor:
                hidden = shared(hidden)
                B, m, D = hidden.shape
                every = run_blocks(trunk, layers, hidden.expand(heads, B, m, D).reshape(heads * B, m, D), cache)
                return every.view(heads, B, m, D).permute(1, 2, 0, 3)

            states.refresh = self._stacked_heads

        states.shared = shared
        if shared.handle is not None:  # the hook goes when decoding drops the drafter
            weakref.finalize(states, shared.handle.remove)
        return states


class BranchState:
    """During decoding, the trunk's state after its first `depth` blocks at the positions of the last trunk pass,
    for heads that branch off there: a forward hook on that block records it (the decoding loop only sees the
    trunk's output). Called with the trunk output the drafter was given, it returns the matching positions of the
    recorded state, once, or the trunk output itself when the heads branch off at the end. Passes with gradients
    (training, while static passes keep the hook) are not recorded."""

    def __init__(self, trunk, depth: int):
        self.state, self.handle = None, None
        if depth < len(trunk.blocks):
            where = trunk.blocks[depth - 1] if depth else trunk.embed
            self.handle = where.register_forward_hook(self._record)

    def _record(self, module, args, output) -> None:
        if not torch.is_grad_enabled():  # decoding's passes; a training step's output (and its graph) is not held
            self.state = output

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.handle is None:
            return hidden
        state, self.state = self.state, None  # read once: the drafter keeps no activation between passes
        return state[:, : hidden.shape[1]]  # the pass's first positions are the ones it kept
