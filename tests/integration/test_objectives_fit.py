"""Every objective, through ObjectiveLM and a real Lightning Trainer, learns the star graph."""

import lightning as L
import pytest
import torch

from objectives import NTP, CausalMTP, FSPBoW, FSPRevLM, ParallelMTP, SequentialMTP
from suite import ObjectiveLM, TaskData

STAR = {"num_nodes": 17, "num_train": 3200, "num_val": 64, "num_test": 64}
OBJECTIVES = [
    ("ntp", lambda path: NTP()),
    ("parallel n=4", lambda path: ParallelMTP(n=4)),
    ("causal n=3", lambda path: CausalMTP(n=3)),
    ("sequential depth=2", lambda path: SequentialMTP(depth=2, loss_weight_schedule={0.0: 0.3, 0.5: 0.1})),
    ("fsp_bow", lambda path: FSPBoW(tau=4)),
    ("fsp_revlm", lambda path: FSPRevLM(str(path))),
]


def validation_loss(model, data) -> float:
    batch = next(iter(torch.utils.data.DataLoader(data.task.examples("val"), batch_size=64)))
    with torch.no_grad():
        return model._loss(batch)[0].item()


@pytest.mark.parametrize("label, make", OBJECTIVES, ids=[label for label, _ in OBJECTIVES])
def test_objective_lowers_its_loss_on_the_star_graph(label, make, reverse_lm, tmp_path):
    data = TaskData(options=STAR, batch_size=32)
    model = ObjectiveLM("nano", make(reverse_lm), vocab_size=data.vocab_size, lr=3e-3, warmup_steps=10)
    before = validation_loss(model, data)
    trainer = L.Trainer(max_steps=150, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, data)
    after = validation_loss(model, data)
    assert after < 0.6 * before, (label, before, after)
    assert "train/loss/head_1" in trainer.callback_metrics
