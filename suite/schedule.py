"""The learning-rate schedule of every run: a linear warm-up to the peak, then a cosine to `min_ratio` x the peak at
the run's last step, and what resuming does to it.

Resumed with the budget it was saved with, the schedule continues exactly (bit for bit). Resumed with another
budget (`--trainer.max_steps=6000 --ckpt_path=last` after a 2,000-step run), it keeps the learning rate it had
reached and decays from there along a cosine to the floor at the new last step: never a second warm-up. A run that
had finished its schedule is on the floor, so its extension trains at the floor rate; a run stopped early (killed,
or `--trainer.max_steps` raised before its end) decays from where it stopped. Still in its warm-up, it warms up as
before and decays to the new end."""

from __future__ import annotations

import math

import torch


class WarmupCosine(torch.optim.lr_scheduler.LRScheduler):
    """A factor of each group's base learning rate, a closed form of the step (`factor`)."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float,
                 last_epoch: int = -1):
        self.warmup, self.total, self.min_ratio = warmup, max(total, 1), min_ratio
        self.restart: tuple[int, float] | None = None
        """(step, factor) where a run resumed with a new budget began its own decay to the floor."""
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        if self.restart is not None and step >= self.restart[0]:
            start, begin = self.restart
            return self._cosine(begin, (step - start) / max(self.total - start, 1))
        if step < self.warmup:  # from 1/warmup of the peak at step 0 to the peak at step `warmup`
            return (1 + step * (self.warmup - 1) / self.warmup) / self.warmup
        return self._cosine(1.0, (step - self.warmup) / max(self.total - self.warmup, 1))

    def _cosine(self, begin: float, progress: float) -> float:
        progress = min(max(progress, 0.0), 1.0)
        return self.min_ratio + (begin - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    def load_state_dict(self, state_dict: dict) -> None:
        total = self.total
        if "total" not in state_dict:  # a checkpoint of the chained torch schedulers foresight used before
            self.last_epoch, self._last_lr = state_dict["last_epoch"], list(state_dict["_last_lr"])
            if self.last_epoch >= self.warmup:
                self.restart = (self.last_epoch, self._last_lr[0] / self.base_lrs[0])
            return
        super().load_state_dict(state_dict)
        if self.total != total:  # another budget: continue from where the saved schedule is, decay to the new end
            if self.last_epoch >= self.warmup or self.restart is not None:
                self.restart = (self.last_epoch, self.factor(self.last_epoch))
            self.total = total
