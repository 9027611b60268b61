"""`TaskData`: the one LightningDataModule, over any registered task. Every objective sees the same batches:
dicts of token ids [B, T], the loss mask [B, T] and where each answer starts [B]."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

import tasks
from suite.errors import check_range
from tasks import Examples


class TaskData(L.LightningDataModule):
    def __init__(self, task: str = "star_graph", options: dict | None = None, batch_size: int = 64,
                 eval_batch_size: int | None = None, num_workers: int = 0, reverse: bool = False):
        """
        Args:
            task: A registered task family (see `tasks.TASKS`), e.g. star_graph.
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
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.reverse = num_workers, reverse

    @property
    def vocab_size(self) -> int:
        return self.task.vocab_size

    def state_dict(self) -> dict:
        # the tokenizer travels in every checkpoint (under "TaskData"), so evaluation and export need nothing else
        return {"tokenizer": self.task.tokenizer.to_str()}

    def load_state_dict(self, state: dict) -> None:
        pass  # the task rebuilds the same tokenizer from its options; the stored copy is for readers of checkpoints

    @property
    def seq_len(self) -> int:
        return self.task.seq_len

    def evaluate(self, generate, batch) -> dict:
        """The task's per-example scores of a batch; none for reversed data, whose prompts come last."""
        return {} if self.reverse else self.task.evaluate(generate, batch)

    def _examples(self, split: str) -> Examples:
        examples = self.task.examples(split)
        if self.reverse:
            examples = Examples(examples.tokens.flip(1), examples.loss_mask.flip(1), examples.prompt_len)
        return examples

    def _loader(self, split: str, train: bool) -> DataLoader:
        return DataLoader(self._examples(split), batch_size=self.batch_size if train else self.eval_batch_size,
                          shuffle=train, drop_last=train, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
