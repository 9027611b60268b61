"""Decoding with the trunk's KV cache: greedy (or sampled) decoding, and self-speculative decoding with an objective's
extra heads (Stern et al. 2018's blockwise parallel decoding; Gloeckle et al. 2024, section 3.2; DeepSeek-V3's MTP
modules), both behind `generate`.

Self-speculative decoding: after every trunk pass the objective's drafter proposes the n - 1 tokens after the next
one; the next trunk pass reads the next token and those drafts at once, keeps the longest prefix of drafts that
matches the next-token head's own greedy choices, adds the token that head chooses after it, and rolls the caches
back over the rest. Every token kept is the one greedy decoding picks after the same prefix, so the output equals
greedy decoding's token for token; what the heads change is how many tokens a trunk pass yields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from suite.errors import UsageError

Stop = Callable[[int, list[int]], bool]
"""stop(row, the row's new ids so far) -> True when the row is finished (e.g. an `until` string appeared)."""


@dataclass
class DecodeStats:
    """What a `generate` call did. Speculative figures are over rows while they were unfinished."""

    trunk_passes: int = 0
    """Trunk forward passes, the prompt's included."""
    row_passes: int = 0
    """Trunk passes summed over the rows that were unfinished when the pass began."""
    row_tokens: int = 0
    """New tokens summed over rows, up to and including each row's last (its EOS or stop)."""
    drafted: list[int] = field(default_factory=list)
    """Per draft (head 2, 3, ...): (row, pass) pairs in which the trunk checked that head's draft."""
    accepted: list[int] = field(default_factory=list)
    """Per draft: (row, pass) pairs in which that draft and every draft before it matched greedy decoding."""

    @property
    def tokens_per_pass(self) -> float:
        """Mean new tokens a row gets from one trunk pass: 1.0 for greedy decoding, up to n when every draft holds."""
        return self.row_tokens / max(self.row_passes, 1)

    @property
    def acceptance(self) -> list[float]:
        """Per draft head (2, 3, ...): the fraction of its checked drafts that were kept."""
        return [a / d if d else 0.0 for a, d in zip(self.accepted, self.drafted)]

    def add(self, other: DecodeStats) -> None:
        """Fold another call's figures into these."""
        self.trunk_passes += other.trunk_passes
        self.row_passes += other.row_passes
        self.row_tokens += other.row_tokens
        for mine, theirs in ((self.drafted, other.drafted), (self.accepted, other.accepted)):
            mine += [0] * (len(theirs) - len(mine))
            for i, value in enumerate(theirs):
                mine[i] += value

    def as_dict(self) -> dict:
        return {"trunk_passes": self.trunk_passes, "row_passes": self.row_passes, "row_tokens": self.row_tokens,
                "tokens_per_pass": self.tokens_per_pass, "drafted": self.drafted, "accepted": self.accepted,
                "acceptance": self.acceptance}


@torch.inference_mode()
def generate(lm, input_ids: torch.Tensor, max_new_tokens: int, speculative: bool = False, eos_id: int | None = None,
             stop: Stop | None = None, temperature: float = 0.0,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, DecodeStats]:
    """Continuations [B, max_new_tokens] of equal-length prompts `input_ids` [B, P], and what decoding them took.

    lm: an `ObjectiveLM` (anything with `.trunk` and `.objective`).
    speculative: draft with the objective's extra heads (`Objective.drafter`) and verify the drafts in one trunk
        pass; the output is greedy decoding's. Rows of a batch keep the longest draft prefix that holds for every
        unfinished row, so batch size 1 gives the most speedup.
    eos_id, stop: a row is finished once it emits `eos_id` or `stop(row, its new ids)` is true; its later positions
        hold `eos_id` (0 when None). Decoding ends when every row is finished.
    temperature: sample at this temperature instead of greedy decoding (plain decoding only)."""
    trunk, objective = lm.trunk, lm.objective
    batch, prompt_len = input_ids.shape
    pad = eos_id if eos_id is not None else 0
    out = input_ids.new_full((batch, max_new_tokens), pad)
    stats = DecodeStats()
    if max_new_tokens == 0:
        return out, stats
    max_len = prompt_len + max_new_tokens
    drafter = None
    if speculative:
        if temperature > 0:
            raise UsageError(f"speculative decoding is greedy; temperature={temperature} is not allowed with it; "
                             "allowed: temperature 0")
        drafter = objective.drafter(trunk, batch, max_len)
        if drafter is None:
            raise UsageError(f"objective {objective.name!r} has no heads that draft tokens, so it cannot decode "
                             "speculatively; allowed: ntp, parallel_mtp, causal_mtp, sequential_mtp")

    def choose(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(probs.shape[:-1])
        return logits.argmax(-1)

    device = input_ids.device
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    may_finish = eos_id is not None or stop is not None
    # counters stay on the device and are read once at the end: a GPU waits for the host only where decoding
    # must decide something (how many drafts to keep, whether every row is finished)
    row_passes, row_tokens = torch.zeros((), dtype=torch.long, device=device), torch.zeros((), dtype=torch.long,
                                                                                            device=device)
    drafted, accepted = torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, dtype=torch.long,
                                                                                     device=device)
    produced = 0

    def commit(new: torch.Tensor) -> None:
        """Append new tokens [B, m] in order; a row finishes at its first EOS or where `stop` says so, and its
        later tokens are `pad`."""
        nonlocal produced, row_tokens
        if stop is not None:  # the caller's test runs on the host, token by token
            for j in range(new.shape[1]):
                row_tokens = row_tokens + (~done).sum()
                token = new[:, j].masked_fill(done, pad)
                out[:, produced] = token
                produced += 1
                if eos_id is not None:
                    done.logical_or_(token == eos_id)
                for row in (~done).nonzero().flatten().tolist():
                    done[row] = stop(row, out[row, :produced].tolist())
            return
        width = new.shape[1]
        if eos_id is not None:
            is_eos = new == eos_id
            finished = done[:, None] | ((is_eos.cumsum(dim=1) - is_eos.long()) > 0)  # before this token
            row_tokens = row_tokens + (~finished).sum()
            new = new.masked_fill(finished, pad)
            done.logical_or_(is_eos.any(dim=1))
        else:
            row_tokens = row_tokens + batch * width
        out[:, produced: produced + width] = new
        produced += width

    if objective.decoding == "one_pass":  # teacherless: the whole answer from one pass over prompt and dummies
        commit(choose(objective.one_pass_logits(trunk, input_ids, max_new_tokens)))
        stats.trunk_passes, stats.row_passes, stats.row_tokens = 1, batch, int(row_tokens)
        return out, stats
    cache = trunk.new_cache(batch, max_len)
    hidden = trunk(input_ids, cache)  # the prompt; its last position gives the first new token
    trunk_passes, row_passes = 1, row_passes + batch
    tokens = torch.cat([input_ids, choose(trunk.logits(hidden[:, -1:]))], dim=1)
    commit(tokens[:, -1:])
    while produced < max_new_tokens and not (may_finish and bool(done.all())):
        # tokens[:, -1] is chosen but unread; `hidden` holds the trunk output at the positions accepted last pass
        drafts = drafter(hidden, tokens) if drafter is not None else tokens[:, :0]
        width = min(drafts.shape[1], max_new_tokens - produced - 1)  # a pass also yields a token after its drafts
        drafts = drafts[:, :width]
        active = ~done
        trunk_passes += 1
        row_passes = row_passes + active.sum()
        hidden = trunk(torch.cat([tokens[:, -1:], drafts], dim=1), cache)
        chosen = choose(trunk.logits(hidden))  # chosen[:, j]: the next token after reading drafts[:, :j]
        kept = 0
        if width:
            held = (chosen[:, :-1] == drafts).long().cumprod(dim=1).sum(dim=1)  # each row's longest kept prefix
            kept = int(held.masked_fill(done, width).min())  # the one wait on the device per pass
            if drafted.shape[0] < width:
                drafted, accepted = (torch.cat([t, t.new_zeros(width - t.shape[0])]) for t in (drafted, accepted))
            drafted[:width] += active.sum()
            accepted[:width] += ((held[:, None] > torch.arange(width, device=device)) & active[:, None]).sum(0)
        cache.crop(cache.length - (width - kept))
        hidden = hidden[:, : kept + 1]
        new = chosen[:, : kept + 1]  # the kept drafts (equal to the chosen tokens there) and the token after them
        tokens = torch.cat([tokens, new], dim=1)
        commit(new)
    stats.trunk_passes, stats.row_passes, stats.row_tokens = trunk_passes, int(row_passes), int(row_tokens)
    stats.drafted, stats.accepted = drafted.tolist(), accepted.tolist()
    return out, stats
