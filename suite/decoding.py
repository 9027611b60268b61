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
from typing import NamedTuple

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
             stop: Stop | None = None, temperature: float = 0.0, generator: torch.Generator | None = None,
             graphs: bool = False) -> tuple[torch.Tensor, DecodeStats]:
    """Continuations [B, max_new_tokens] of equal-length prompts `input_ids` [B, P], and what decoding them took.

    lm: an `ObjectiveLM` (anything with `.trunk` and `.objective`).
    speculative: draft with the objective's extra heads (`Objective.drafter`) and verify the drafts in one trunk
        pass; the output is greedy decoding's. Rows of a batch keep the longest draft prefix that holds for every
        unfinished row, so batch size 1 gives the most speedup.
    eos_id, stop: a row is finished once it emits `eos_id` or `stop(row, its new ids)` is true; its later positions
        hold `eos_id` (0 when None). Decoding ends when every row is finished.
    temperature: sample at this temperature instead of greedy decoding (plain decoding only).
    graphs: static-shaped passes (`StaticPasses`): every pass after the prompt has one width and runs as a CUDA graph
        on a GPU (on the CPU, the same static-shaped passes, eagerly); the output is the same."""
    trunk, objective = lm.trunk, lm.objective
    batch, prompt_len = input_ids.shape
    pad = eos_id if eos_id is not None else 0
    out = input_ids.new_full((batch, max_new_tokens), pad)
    stats = DecodeStats()
    if max_new_tokens == 0:
        return out, stats
    max_len = prompt_len + max_new_tokens + (objective.n if graphs else 0)  # a static pass may read past the end
    passes = None
    if objective.decoding != "one_pass":
        passes = StaticPasses.reuse(trunk, objective, batch, max_len, speculative) if graphs else \
            Passes(trunk, batch, max_len)
    drafter = None
    if speculative:
        if temperature > 0:
            raise UsageError(f"speculative decoding is greedy; temperature={temperature} is not allowed with it; "
                             "allowed: temperature 0")
        if passes is None or (passes.in_pass is None and passes.window is None):  # else the passes draft
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

    def pick(read: Read) -> torch.Tensor:
        """The tokens a pass chooses: its greedy choices, computed inside the pass, unless decoding samples."""
        return read.greedy if temperature == 0 else choose(read.logits)

    device = input_ids.device
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    may_finish = eos_id is not None or stop is not None
    # counters stay on the device and are read once at the end: a GPU waits for the host only where decoding
    # must decide something (how many drafts to keep, whether every row is finished)
    row_passes, row_tokens = torch.zeros((), dtype=torch.long, device=device), torch.zeros((), dtype=torch.long,
                                                                                            device=device)
    verified: list[tuple[torch.Tensor, int]] = []  # per pass: each row's kept drafts (-1: finished), drafts checked
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
    read = passes.run(input_ids)  # the prompt; its last position gives the first token
    trunk_passes, row_passes = 1, row_passes + batch
    tokens = torch.cat([input_ids, pick(read)[:, -1:]], dim=1)
    passes.decided(0, tokens)
    commit(tokens[:, -1:])
    hidden = read.hidden
    while produced < max_new_tokens and not (may_finish and bool(done.all())):
        # tokens[:, -1] is chosen but unread; `hidden` holds the trunk output at the positions accepted last pass
        if read.drafts is not None:  # drafted inside the last pass, at every position: those of the last one kept
            drafts = read.drafts[:, hidden.shape[1] - 1]
        elif passes.window is not None:  # drafted after it, over its last positions
            drafts = passes.draft()
        else:
            drafts = drafter(hidden, tokens) if drafter is not None else tokens[:, :0]
        width = min(drafts.shape[1], max_new_tokens - produced - 1)  # a pass also yields a token after its drafts
        if not graphs:  # a static-shaped pass reads every draft and keeps at most `width`
            drafts = drafts[:, :width]
        trunk_passes += 1
        row_passes = row_passes + (~done).sum()
        read = passes.run(torch.cat([tokens[:, -1:], drafts], dim=1))
        chosen = pick(read)  # chosen[:, j]: the next token after reading drafts[:, :j]
        kept = 0
        if width:  # read.held: each row's longest prefix of drafts equal to greedy's choices
            verified.append((read.held.masked_fill(done, -1), width))
            kept = min(int(read.held.masked_fill(done, width).min()), width)  # the one wait on the device a pass
        passes.keep(drafts.shape[1] + 1, kept)
        hidden = read.hidden[:, : kept + 1]
        new = chosen[:, : kept + 1]  # the kept drafts (equal to the chosen tokens there) and the token after them
        tokens = torch.cat([tokens, new], dim=1)
        passes.decided(tokens.shape[1] - new.shape[1], new)
        commit(new)
    stats.trunk_passes, stats.row_passes, stats.row_tokens = trunk_passes, int(row_passes), int(row_tokens)
    stats.drafted, stats.accepted = tally(verified)
    return out, stats


def tally(verified: list[tuple[torch.Tensor, int]]) -> tuple[list[int], list[int]]:
    """`DecodeStats.drafted` and `.accepted` from each verifying pass's kept drafts per row (-1 where the row was
    finished; a row's count may exceed what the pass kept, which is the least over rows) and its drafts checked."""
    if not verified:
        return [], []
    widest = max(width for _, width in verified)
    held = torch.stack([h for h, _ in verified]).cpu()  # [passes, B]
    widths = torch.tensor([width for _, width in verified])
    draft = torch.arange(widest)
    checked = (held >= 0)[:, :, None] & (draft < widths[:, None, None])  # [passes, B, draft]
    kept = checked & (held[:, :, None] > draft)
    return checked.sum((0, 1)).tolist(), kept.sum((0, 1)).tolist()


class Read(NamedTuple):
    """What a trunk pass over ids [B, w] gives decoding."""

    hidden: torch.Tensor
    """The trunk output [B, w, D]."""
    logits: torch.Tensor
    """The next-token head's logits [B, w, V]."""
    greedy: torch.Tensor
    """Their greedy choices [B, w]: greedy[:, j] is the token after ids[:, : j + 1]."""
    held: torch.Tensor | None
    """Per row [B], how many of the drafts read, ids[:, 1:], equal greedy's choices before them (a prefix); None
    when the pass read no drafts."""
    drafts: torch.Tensor | None
    """The heads' drafts [B, w, n - 1] at every position, when they draft inside the pass; else None (an eager
    drafter reads the positions a pass kept, after it)."""


def read_pass(trunk, ids: torch.Tensor, cache, in_pass=None) -> Read:
    """One trunk pass over `ids` with `cache`, and what decoding needs of it, all on the device. With `in_pass`
    (a `PassDrafter`) the heads' states go through the final norm and unembedding in one matmul with the trunk's
    own: the unembedding is read once a pass."""
    hidden = trunk(ids, cache)
    drafts = None
    if in_pass is None:
        logits = trunk.logits(hidden)
    else:
        every = trunk.logits(torch.cat([hidden[:, :, None], in_pass(hidden)], dim=2))  # [B, w, n, V]
        logits, drafts = every[:, :, 0], every[:, :, 1:].argmax(-1)
    greedy = logits.argmax(-1)
    held = (greedy[:, :-1] == ids[:, 1:]).long().cumprod(dim=1).sum(dim=1) if ids.shape[1] > 1 else None
    return Read(hidden, logits, greedy, held, drafts)


class Passes:
    """The trunk passes of one `generate` call, eager: each pass as wide as what it reads, the KV cache cropped back
    over the drafts it rejects. `run(ids)` -> `Read`; `keep(read, kept)` after a pass that read `read` tokens and
    kept the first `kept` drafts."""

    in_pass = None
    """The heads' `PassDrafter`, where they draft inside the pass (static-shaped passes only)."""
    window = None
    """The heads' `WindowDrafter`, where they draft after the pass at one shape (static-shaped passes only)."""

    def __init__(self, trunk, batch: int, max_len: int):
        self.trunk = trunk
        self.cache = trunk.new_cache(batch, max_len)

    def run(self, ids: torch.Tensor) -> Read:
        return read_pass(self.trunk, ids, self.cache)

    def keep(self, read: int, kept: int) -> None:
        self.cache.crop(self.cache.length - (read - kept - 1))

    def decided(self, start: int, tokens: torch.Tensor) -> None:
        """Tokens [B, m] at positions start .. start + m - 1 are decided (for a window drafter to read)."""


STATIC_LENGTH = 256
"""Static caches hold a multiple of this many positions, so calls with prompts of different lengths share them
(and their CUDA graphs)."""
STATIC_KEPT = 4
"""Sets of static caches and graphs a model keeps (greedy and speculative decoding, say), the oldest dropped first."""


class StaticPasses(Passes):
    """Static-shaped passes: the KV caches (the trunk's and the heads') hold every position up to `max_len` and a
    pass writes at a `Cursor`, so every pass after the prompt has the same shapes. The heads draft inside the pass
    (`Objective.pass_drafter`) or, where they need the decided tokens, after it over a window of the last positions
    kept (`Objective.window_drafter`, `draft`), also at one shape. On a GPU each shape's pass and drafting is
    captured once as a CUDA graph and replayed, one launch instead of one per kernel; elsewhere it runs eagerly, the
    same computation. Caches and graphs are kept for the next call with the same model and shapes (`reuse`): entries
    a call leaves are masked out in the next until it overwrites them."""

    def __init__(self, trunk, objective, batch: int, max_len: int, drafting: bool):
        device = trunk.embed.weight.device
        self.trunk, self.n = trunk, objective.n
        self.cursor = trunk.new_cursor()
        self.cache = trunk.new_cache(batch, max_len, cursor=self.cursor)
        self.in_pass = objective.pass_drafter(trunk, batch, max_len, self.cursor) if drafting else None
        self.window = None
        if drafting and self.in_pass is None:
            self.window_cursor = trunk.new_cursor()
            self.window = objective.window_drafter(trunk, batch, max_len, self.window_cursor)
        if self.window is not None:  # what the window reads: the trunk's output and the tokens decided
            self.hidden = torch.zeros(batch, max_len, trunk.config.d_model, device=device,
                                      dtype=trunk.embed.weight.dtype)
            self.tokens = torch.zeros(batch, max_len + 1, dtype=torch.long, device=device)
        self.length = 0  # positions decided: where the next pass writes
        self.windows = 0  # drafting calls so far in this `generate` call
        self.capture = device.type == "cuda"
        self.graphs: dict = {}

    @classmethod
    def reuse(cls, trunk, objective, batch: int, max_len: int, drafting: bool) -> StaticPasses:
        """The passes of an earlier call with this trunk, objective and shapes, rewound, or new ones."""
        bucket = -(-max_len // STATIC_LENGTH) * STATIC_LENGTH
        weight = trunk.embed.weight
        key = (id(objective), batch, bucket, drafting, weight.device, weight.dtype, trunk.kv_quant)
        kept = trunk.__dict__.setdefault("_static_passes", {})  # dies with the trunk (a cycle: the passes read it)
        if key not in kept:
            while len(kept) >= STATIC_KEPT:  # the oldest shapes' caches and graphs go
                kept.pop(next(iter(kept)))
            kept[key] = cls(trunk, objective, batch, bucket, drafting)
        passes = kept[key]
        passes.length = passes.windows = 0
        if passes.in_pass is not None:
            passes.in_pass.refresh()  # heads whose weights are copied for the pass read them as they are now
        return passes

    def _pass(self, ids: torch.Tensor) -> Read:
        read = read_pass(self.trunk, ids, self.cache, self.in_pass)
        if self.window is not None:
            self.hidden.index_copy_(1, self.cursor.at, read.hidden)
        return read

    def run(self, ids):
        prompt = self.length == 0
        self.cursor.seek(self.length, ids.shape[1])
        self.length += ids.shape[1]
        if prompt or not self.capture:  # the prompt runs once: not worth a graph
            return self._pass(ids)
        return self._replayed(("pass", ids.shape[1]), self._pass, ids)

    def decided(self, start: int, tokens: torch.Tensor) -> None:
        if self.window is not None:
            self.tokens[:, start: start + tokens.shape[1]] = tokens

    def draft(self) -> torch.Tensor:
        """The window drafter's drafts [B, n - 1] after the last pass kept position p = length - 1: over the last n
        positions (all of them while there are fewer), or over every position on a call's first drafting (its
        modules have not read the prompt)."""
        last = self.length - 1
        width = min(self.n, self.length) if self.windows else self.length
        self.windows += 1
        self.window_cursor.seek(last - width + 1, width)
        if width != self.n or not self.capture:
            return self._window()
        return self._replayed(("window", width), self._window)

    def _window(self) -> torch.Tensor:
        at = self.window_cursor.at
        return self.window(self.hidden.index_select(1, at), self.tokens.index_select(1, at + 1))

    def _replayed(self, key, run, ids: torch.Tensor | None = None):
        """`run(ids)` (or `run()`) as a CUDA graph: captured on first use, replayed after."""
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = self._captured(run, ids)
        cuda_graph, static_ids, outputs, _ = graph
        if ids is not None:
            static_ids.copy_(ids)
        cuda_graph.replay()
        return outputs

    def _captured(self, run, ids: torch.Tensor | None):
        """A CUDA graph of `run`, after a warm-up on a side stream (as CUDA graph capture requires); both write the
        caches at the cursor, as the replay that follows does again, with the same values."""
        inputs = () if ids is None else (ids.clone(),)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            run(*inputs)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = run(*inputs)
        # a graph reads memory by address: the rotary table it read stays alive even if the trunk's grows later
        return graph, inputs[0] if inputs else None, outputs, self.trunk._rope_table

    def keep(self, read: int, kept: int) -> None:
        self.length -= read - kept - 1  # stale entries past it are masked out, then overwritten
