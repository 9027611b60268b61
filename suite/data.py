"""`TaskData`: the one LightningDataModule, over any registered task. Every objective sees the same batches:
dicts of token ids [B, T], the loss mask [B, T] and where each answer starts [B]."""

from __future__ import annotations

import itertools
import os
from typing import Union

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

import tasks
from suite.errors import UsageError, check_range
from tasks import Examples


OptionValue = Union[bool, int, float, str, list, dict, None]
"""A task option's value as the command line gives it: `--data.options.degree=3` is the int 3 (in config.yaml
too), `true` a bool, `[1, 4]` a list, anything else a string; the task's signature checks it (parse_options)."""


class TaskData(L.LightningDataModule):
    """The data: a registered task's splits, batched the same way for every objective."""

    def __init__(self, task: str = "star_graph", options: dict[str, OptionValue] | None = None, batch_size: int = 64,
                 eval_batch_size: int | None = None, num_workers: int = 0, reverse: bool = False):
        """
        Args:
            task: A registered task family: star_graph, tree_path, countdown, sat, biographies, synthetic_code,
                humaneval, python_stdlib, mix, or corpus (your documents, from `foresight prepare`); `foresight
                tasks` lists each one's options.
            options: The task's own options, e.g. {degree: 3, path_length: 5}; on the command line also
                one at a time, --data.options.degree=3.
            batch_size: Training sequences per step (per device).
            eval_batch_size: Sequences per validation/test batch; None means batch_size.
            num_workers: DataLoader worker processes; the splits are tensors in memory, so 0 is usually fastest.
            reverse: Every sequence right to left (and its loss mask with it), to train the reverse language
                model that FSPRevLM distills; the task's answer scores are then not computed.
        """
        super().__init__()
        check_range("batch_size", batch_size, 1)
        check_range("num_workers", num_workers, 0)
        self.save_hyperparameters()
        self.task = tasks.build(task, **(options or {}))
        if reverse and self.task.streaming:
            raise UsageError(f"reverse=True is for tasks held in memory; allowed: reverse=False with {task}")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.reverse = num_workers, reverse

    @property
    def vocab_size(self) -> int:
        return self.task.vocab_size

    def state_dict(self) -> dict:
        # the tokenizer travels in every checkpoint (under "TaskData"), so evaluation and export need nothing else;
        # with the token that ends a document, which export names as the model's end of text
        return {"tokenizer": self.task.tokenizer.to_str(), "separator": self.task.document_separator}

    def load_state_dict(self, state: dict) -> None:
        pass  # the task rebuilds the same tokenizer from its options; the stored copy is for readers of checkpoints

    @property
    def seq_len(self) -> int:
        return self.task.seq_len

    @property
    def streaming(self) -> bool:
        """The task reads its rows from disk (`corpus`) instead of holding its splits in memory."""
        return self.task.streaming

    @property
    def has_prompts(self) -> bool:
        """Some training token other than padding (id 0) is not a prediction target: the examples have prompts
        (what teacherless needs)."""
        if self.streaming:
            return False
        examples = self._examples("train")
        return bool((~examples.loss_mask & (examples.tokens != 0)).any())

    def evaluate(self, generate, batch) -> dict:
        """The task's per-example scores of a batch; none for reversed data, whose prompts come last."""
        return {} if self.reverse else self.task.evaluate(generate, batch)

    def _examples(self, split: str) -> Examples:
        examples = self.task.examples(split)
        if self.reverse:
            examples = Examples(examples.tokens.flip(1), examples.loss_mask.flip(1), examples.prompt_len)
        return examples

    def _rows(self, split: str):
        """The split's rows: a streamed task's read from disk as batches ask for them, or the examples in memory."""
        return self.task.rows(split) if self.streaming else self._examples(split)

    def train_dataloader(self) -> DataLoader:
        return training_loader(self._rows("train"), self.batch_size, self.num_workers,
                               packed_rows if self.streaming else None)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self._rows(split), batch_size=self.eval_batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, collate_fn=packed_rows if self.streaming else None)


def training_loader(rows, batch_size: int, num_workers: int = 0, collate_fn=None) -> "ResumableLoader":
    """Every task's training loader over its rows: whole batches in `EpochSampler`'s order, which is a function of
    the run's seed (Lightning's seed_everything) and the epoch alone, resumable (`ResumableLoader`)."""
    sampler = EpochSampler(len(rows), seed=int(os.environ.get("PL_GLOBAL_SEED", 0)))
    return ResumableLoader(rows, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=num_workers,
                           persistent_workers=num_workers > 0, collate_fn=collate_fn)


def packed_rows(rows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch of streamed rows of token ids, as every task's batches are: every token a target, no prompts."""
    tokens = torch.stack(rows).long()
    return {"tokens": tokens, "loss_mask": torch.ones_like(tokens, dtype=torch.bool),
            "prompt_len": torch.zeros(len(rows), dtype=torch.long)}


class EpochSampler(Sampler[int]):
    """A new permutation of the training examples each epoch that depends on (seed, epoch) alone, never on the
    global random state: a run resumed from a checkpoint draws the same order as one that was never stopped.
    Lightning calls `set_epoch` at the start of every epoch (and wraps the sampler to shard it under DDP)."""

    def __init__(self, length: int, seed: int = 0):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(self.length, generator=generator).tolist()


class ResumableLoader(DataLoader):
    """The training loader: one stream of batches over the run, epoch after epoch of `EpochSampler`'s order, that
    a resumed run continues where it stopped. The loader counts the batches it has handed out in the run (its
    `position`); Lightning stores the count in every checkpoint (a loader with `state_dict`/`load_state_dict`), and
    each epoch Lightning asks for, the loader serves from its position to the end of that data epoch.

    So a killed-and-resumed run takes exactly the steps of an uninterrupted one, and so does a run that stopped at
    its max_steps and is extended (`--ckpt_path=last` with a larger max_steps), although Lightning then counts the
    unfinished epoch as done and shortens the next one: the examples come in the order of a run that never
    stopped, whatever Lightning numbers its epochs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._position, self._resume = 0, None

    def __iter__(self):
        return self._counted(super().__iter__())

    def _counted(self, batches):
        # runs at the first batch, after Lightning has set the sampler's epoch and before the sampler draws its
        # permutation (Lightning creates the iterator earlier); the data epoch is the loader's, not Lightning's
        resume, self._resume = self._resume, None
        if resume is not None:  # checkpoints before "position" held the epoch and the batches served in it
            self._position = resume.get("position", resume["epoch"] * len(self) + resume["batches"])
        epoch, start = divmod(self._position, len(self))
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        for _ in itertools.islice(batches, start):  # this epoch's batches the run has already trained on
            pass
        for batch in batches:
            self._position += 1
            yield batch

    def state_dict(self) -> dict:
        epoch, batches = divmod(self._position, len(self))
        return {"position": self._position, "epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state
