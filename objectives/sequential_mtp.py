"""Sequential multi-token prediction, as DeepSeek-V3's MTP modules (DeepSeek-V3 technical report, section 2.2;
Megatron-Core's MTP): module k combines the previous depth's representation with the embedding of the token k
steps ahead, then one transformer block, then the shared output head predicts the token k + 1 steps ahead:

    h'_k = M_k [RMSNorm(h_{k-1}); RMSNorm(Emb(x_{t+k}))],  h_k = Block_k(h'_k),  P(x_{t+k+1}) = Head(h_k)

with h_0 the trunk output. Training is teacher-forced (the true x_{t+k}), so module k at position t reads
x_{<=t+k} and nothing after; the last k positions have no target and are masked. The loss is
L_ntp + lambda / D * sum_k L_k, with lambda on a schedule over training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from objectives.base import Objective
from objectives.heads import embed, head_losses, run_blocks, token_head
from suite.errors import UsageError, check_range


def shifted_tokens(tokens: torch.Tensor, k: int, fill: int = 0) -> torch.Tensor:
    """x_{t+k} at position t; `fill` where t+k runs past the end (those positions have no target)."""
    return F.pad(tokens[:, k:], (0, min(k, tokens.shape[1])), value=fill)


class SequentialMTP(Objective):
    name = "sequential_mtp"

    def __init__(self, depth: int = 1, loss_weight: float = 0.3, loss_weight_schedule: dict[float, float] | None = None,
                 headwise: bool | None = None):
        """
        Args:
            depth: D, the number of sequential modules; the model predicts D + 1 tokens (depth=0 is NTP).
            loss_weight: lambda, the weight of the modules' mean loss.
            loss_weight_schedule: {fraction of training: lambda from there on}, e.g. DeepSeek-V3's
                {0.0: 0.3, 0.675: 0.1}; replaces loss_weight when given.
            headwise: Run heads one at a time (forward and backward) so only one head's logits and activations
                are alive; None decides by shape (`Objective.use_headwise`), False builds one graph over all heads.
        """
        super().__init__()
        check_range(f"{self.name} depth", depth, 0)
        check_range(f"{self.name} loss_weight", loss_weight, 0.0)
        if loss_weight_schedule is not None:
            if not loss_weight_schedule or min(loss_weight_schedule) != 0.0:
                raise UsageError(f"{self.name} loss_weight_schedule={loss_weight_schedule} must start at fraction "
                                 f"0.0; allowed: {{0.0: lambda, fraction: lambda, ...}} with fractions in [0, 1]")
            for start, weight in loss_weight_schedule.items():
                check_range(f"{self.name} loss_weight_schedule fraction", start, 0.0, 1.0)
                check_range(f"{self.name} loss_weight_schedule weight", weight, 0.0)
        self.depth, self.loss_weight, self.loss_weight_schedule = depth, loss_weight, loss_weight_schedule
        self.headwise = headwise
        self.n = depth + 1

    @classmethod
    def horizon_options(cls, n: int) -> dict:
        return {"depth": n - 1}  # the next-token head and n - 1 modules: n tokens ahead

    @property
    def current_loss_weight(self) -> float:
        if self.loss_weight_schedule is None:
            return float(self.loss_weight)
        start = max(s for s in self.loss_weight_schedule if s <= self.progress)
        return float(self.loss_weight_schedule[start])

    def attach(self, trunk) -> None:
        d, eps = trunk.config.d_model, trunk.config.norm_eps
        self.mtp_modules = nn.ModuleList(
            nn.ModuleDict({"norm_hidden": nn.RMSNorm(d, eps=eps), "norm_embed": nn.RMSNorm(d, eps=eps),
                           "proj": nn.Linear(2 * d, d, bias=False), "block": trunk.make_block()})
            for _ in range(self.depth))
        for module in self.mtp_modules:
            trunk.init_weights(module["proj"])

    def _step(self, trunk, k: int, next_tokens: torch.Tensor):
        """Module k: (previous depth's state, tokens k ahead) -> this depth's state; with a KV cache of the module's
        block, at the positions after the cached ones."""
        module = self.mtp_modules[k - 1]

        def step(hidden, previous, cache=None):
            merged = torch.cat([module["norm_hidden"](previous), module["norm_embed"](embed(trunk, next_tokens))], -1)
            return run_blocks(trunk, [module["block"]], module["proj"](merged), cache)

        return step

    def module_inputs(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Module k's token input [B, T] (k = 1..D): x_{t+k}, teacher-forced; 0 where it runs past the end."""
        return [shifted_tokens(tokens, k) for k in range(1, self.depth + 1)]

    def targets(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Targets [B, T] of the next-token head, then of module k: x_{t+k+1}, IGNORE in the last k+1 positions."""
        return [self.future(tokens, k, mask) for k in range(1, self.depth + 2)]

    def loss(self, trunk, hidden, tokens, mask=None):
        weight = self.current_loss_weight / max(self.depth, 1)
        ntp_targets, *module_targets = self.targets(tokens, mask)
        heads = [token_head(trunk, ntp_targets, 1.0, "head_1")]
        heads += [token_head(trunk, targets, weight, f"head_{k + 1}", self._step(trunk, k, inputs))
                  for k, (inputs, targets) in enumerate(zip(self.module_inputs(tokens), module_targets), start=1)]
        loss, metrics = head_losses(hidden, heads, self.head_params(trunk), chained=True,
                                    headwise=self.use_headwise(trunk))
        return loss, {**metrics, "loss_weight": torch.tensor(self.current_loss_weight)}

    def module_logits(self, trunk, input_ids: torch.Tensor) -> list[torch.Tensor]:
        """Teacher-forced logits of every module, as in training: entry k-1 [B, T, V] predicts x_{t+k+1} at t."""
        state, logits = trunk(input_ids), []
        for k, inputs in enumerate(self.module_inputs(input_ids), start=1):
            state = self._step(trunk, k, inputs)(None, state)
            logits.append(trunk.logits(state))
        return logits

    def head_logits(self, trunk, input_ids: torch.Tensor) -> torch.Tensor:
        """The next-token head and every module teacher-forced, as trained: module k at t reads x_{t+1..t+k}."""
        return torch.stack([trunk.logits(trunk(input_ids)), *self.module_logits(trunk, input_ids)], dim=2)

    def draft_logits(self, trunk, input_ids: torch.Tensor) -> torch.Tensor:
        """Drafts of x_{t+1..t+D+1} from x_{<=t}: each module reads the greedy draft of the token before, at every
        position, where training read the true token."""
        state = trunk(input_ids)
        drafts = [trunk.logits(state)]
        for k in range(1, self.depth + 1):
            state = self._step(trunk, k, drafts[-1].argmax(-1))(None, state)
            drafts.append(trunk.logits(state))
        return torch.stack(drafts, dim=2)

    def window_drafter(self, trunk, batch, max_len, cursor):
        """Modules 1..D over the last w positions the trunk kept, p - w + 1 .. p, re-read every call at `cursor` with
        static KV caches: draft(hidden [B, w, D], known [B, w]) -> [B, D], where hidden is the trunk output there and
        known the decided tokens x_{p-w+2} .. x_{p+1}. Module k at window position i reads x_{p-w+1+i+k}: entry
        i + k - 1 of known followed by this call's drafts, a fixed slice. Entries before the window stay as an
        earlier call wrote them. In decoding, where the decided tokens after a pass are the drafts it kept and the
        token after them, w = n suffices: every entry a module wrote with a draft that was then rejected lies in the
        window (those before it read decided tokens, or drafts that were kept), so one shape serves every call after
        the first, which reads the whole prompt. `drafter` re-reads a window wide enough for any decided tokens."""
        caches = [trunk.new_cache(batch, max_len, 1, cursor) for _ in range(self.depth)]

        def draft(hidden: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
            width, sequence, state, drafts = hidden.shape[1], known, hidden, []
            for k, cache in enumerate(caches, start=1):
                state = self._step(trunk, k, sequence[:, k - 1: k - 1 + width])(None, state, cache)
                drafts.append(trunk.logits(state[:, -1]).argmax(-1))
                sequence = torch.cat([sequence, drafts[-1][:, None]], dim=1)
            return torch.stack(drafts, dim=1) if drafts else known[:, :0]

        return draft

    def drafter(self, trunk, batch, max_len):
        """Modules 1..D teacher-forced wherever the token they read is decided (as in training) and reading this
        call's drafts where it is not, as DeepSeek-V3's modules decode: `window_drafter` over the positions the trunk
        read since the previous call and the D before them, whose entries read the previous call's drafts (the whole
        prompt on the first call). Those are all the entries that a decided token can change, whichever tokens the
        caller decided."""
        cursor = trunk.new_cursor()
        window = self.window_drafter(trunk, batch, max_len, cursor)
        read = trunk.embed.weight.new_zeros(batch, max_len, trunk.config.d_model)  # the trunk output so far

        def draft(hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
            decided = tokens.shape[1] - 1  # C: the trunk has read positions 0 .. C - 1
            read[:, decided - hidden.shape[1]: decided] = hidden
            start = max(decided - hidden.shape[1] - self.depth, 0)
            cursor.seek(start, decided - start)
            return window(read[:, start: decided], tokens[:, start + 1: decided + 1])

        return draft
