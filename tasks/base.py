"""What every task family provides: a tokenizer, deterministic splits as token ids, and a scorer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from suite.errors import check_choice

SPLITS = ("train", "val", "test")

Generate = Callable[[torch.Tensor, int], torch.Tensor]
"""generate(prompt_ids [B, P], max_new_tokens) -> new token ids [B, max_new_tokens], greedy."""


@dataclass
class Examples(torch.utils.data.Dataset):
    """One split of a task as token ids: a map-style dataset of dicts for the DataLoader."""

    tokens: torch.Tensor
    """[N, L] token ids, right-padded with the task's pad id."""
    loss_mask: torch.Tensor
    """[N, L] bool: the tokens that are prediction targets in training."""
    prompt_len: torch.Tensor
    """[N] where each example's answer starts."""

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens[i], "loss_mask": self.loss_mask[i], "prompt_len": self.prompt_len[i]}


class Task:
    """A task family: subclasses set `name` and `family`, build `self.tokenizer` (a `tokenizers.Tokenizer`) and
    implement `_generate` (all splits, once) and `evaluate`."""

    name: ClassVar[str]
    family: ClassVar[str]
    """The score this task feeds: "reasoning", "knowledge" or "code"."""
    primary: ClassVar[str]
    """The name of the `evaluate` score that stands for the task (shown in the progress bar, fed to family scores)."""

    tokenizer = None
    _splits: dict[str, Examples] | None = None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def seq_len(self) -> int:
        """Tokens per example (the longest, where lengths vary)."""
        raise NotImplementedError

    def token_id(self, token: str) -> int:
        return self.tokenizer.token_to_id(token)

    def examples(self, split: str) -> Examples:
        """The split's examples; all splits are generated together on first use, so they can exclude each other."""
        check_choice("split", split, SPLITS)
        if self._splits is None:
            self._splits = self._generate()
        return self._splits[split]

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(map(int, ids)), skip_special_tokens=False)

    def _generate(self) -> dict[str, Examples]:
        raise NotImplementedError

    def evaluate(self, generate: Generate, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-example scores [B] (floats in [0, 1]) for a batch of this task's examples, answering each prompt
        with `generate`."""
        raise NotImplementedError
