"""The learning-rate schedule: warm-up and cosine by hand, and what resuming with the same or a larger budget does."""

import math

import lightning as L
import pytest
import torch

from suite import ObjectiveLM, TaskData
from suite.schedule import WarmupCosine
from tests.conftest import STAR_17


def rates(scheduler: WarmupCosine, optimizer, steps: int) -> list[float]:
    """The learning rate each of the next `steps` optimizer steps trains at."""
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def optimizer(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warm_up_then_cosine_to_the_floor_by_hand():
    opt = optimizer(2.0)
    seen = rates(WarmupCosine(opt, warmup=4, total=12, min_ratio=0.1), opt, 13)
    warm = [2.0 * (0.25 + 0.75 * s / 4) for s in range(4)]  # from peak/4 at step 0, linearly, to the peak at 4
    cosine = [2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 8))) for s in range(4, 13)]
    assert seen == pytest.approx(warm + cosine, abs=1e-12)
    assert seen[4] == pytest.approx(2.0) and seen[12] == pytest.approx(0.2)  # peak, then lr x min_ratio at the end


def test_the_same_budget_resumes_exactly_and_a_larger_one_never_re_warms():
    opt = optimizer()
    straight = rates(WarmupCosine(opt, 4, 20, 0.1), opt, 21)
    opt = optimizer()
    first = WarmupCosine(opt, 4, 20, 0.1)
    before = rates(first, opt, 10)
    state = first.state_dict()

    resumed = optimizer()
    same = WarmupCosine(resumed, 4, 20, 0.1)
    same.load_state_dict(state)
    resumed.param_groups[0]["lr"] = same.get_last_lr()[0]
    assert before + rates(same, resumed, 11) == straight  # exactly: the same closed form at the same steps

    longer_opt = optimizer()
    longer = WarmupCosine(longer_opt, 4, 40, 0.1)  # built for the new budget, then given the saved state
    longer.load_state_dict(state)
    longer_opt.param_groups[0]["lr"] = longer.get_last_lr()[0]
    after = rates(longer, longer_opt, 31)
    assert after[0] == straight[10]  # it goes on from the rate it had reached
    assert all(b <= a for a, b in zip(after, after[1:]))  # and only falls
    assert after[-1] == pytest.approx(0.1)  # to lr x min_ratio at the new last step (40)
    assert after[5] > straight[15]  # decaying over 30 steps, not 10


def test_a_checkpoint_of_the_former_chained_schedulers_resumes_without_re_warming():
    opt = optimizer()
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=16, eta_min=0.1)
    chained = torch.optim.lr_scheduler.SequentialLR(
        opt, [torch.optim.lr_scheduler.LinearLR(opt, 0.25, total_iters=4), cosine], milestones=[4])
    for _ in range(10):
        opt.step()
        chained.step()
    reached = chained.get_last_lr()[0]
    new_opt = optimizer()
    resumed = WarmupCosine(new_opt, 4, 40, 0.1)
    resumed.load_state_dict(chained.state_dict())
    new_opt.param_groups[0]["lr"] = reached
    after = rates(resumed, new_opt, 31)
    assert after[0] == pytest.approx(reached) and after[-1] == pytest.approx(0.1)
    assert all(b <= a for a, b in zip(after, after[1:]))


class Rates(L.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def fit(model, data, steps, folder, ckpt_path=None) -> list[float]:
    recorder = Rates()
    trainer = L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, default_root_dir=folder, callbacks=[recorder],
                        enable_checkpointing=False)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    trainer.save_checkpoint(folder / "last.ckpt")
    return recorder.seen


def test_a_run_extended_to_twice_its_steps_continues_its_schedule(tmp_path):
    """N = 20 steps, then resumed to 2N: the rate never rises after warm-up and ends at min_lr_ratio x lr."""
    data = TaskData(options=STAR_17, batch_size=16)
    build = lambda: ObjectiveLM("nano", vocab_size=data.vocab_size, lr=1e-3, warmup_steps=5, min_lr_ratio=0.1)
    first = fit(build(), data, 20, tmp_path)
    model = build()
    second = fit(model, data, 40, tmp_path, ckpt_path=tmp_path / "last.ckpt")
    seen = first + second + [model.trainer.optimizers[0].param_groups[0]["lr"]]  # and the rate after step 40
    assert len(seen) == 41 and seen[5] == pytest.approx(1e-3)
    assert all(b <= a for a, b in zip(seen[5:], seen[6:])), seen
    assert seen[-1] == pytest.approx(1e-4)
    # the first run ended on the floor, so the extension stays there: it continues, it does not start again
    assert first[-1] > seen[20] and seen[20:] == pytest.approx([1e-4] * 21)
