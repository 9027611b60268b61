"""Every objective, through ObjectiveLM and a real Lightning Trainer, learns the star graph, and none starves its
next-token head: after the same steps, its `loss/head_1` is near NTP's."""

import lightning as L
import pytest
import torch

from objectives import NTP, CausalMTP, FSPBoW, FSPRevLM, ParallelMTP, SequentialMTP, Teacherless
from suite import ObjectiveLM, TaskData

STAR = {"num_nodes": 17, "num_train": 3200, "num_val": 64, "num_test": 64}
OBJECTIVES = [
    ("ntp", lambda path: NTP()),
    ("parallel n=4", lambda path: ParallelMTP(n=4)),
    ("parallel siblings n=2", lambda path: ParallelMTP(n=2, layout="siblings")),
    ("causal n=3", lambda path: CausalMTP(n=3)),
    ("sequential depth=2", lambda path: SequentialMTP(depth=2, loss_weight_schedule={0.0: 0.3, 0.5: 0.1})),
    ("fsp_bow", lambda path: FSPBoW(tau=4)),
    ("fsp_revlm", lambda path: FSPRevLM(str(path))),
    ("teacherless", lambda path: Teacherless()),
]
HEAD_1_SLACK = 1.5
"""An auxiliary loss may slow the next-token head a little: after 250 steps its validation loss is at most this
multiple of NTP's (FSP-BoW's first default, a sum over the vocabulary, left it at 1.8x, stuck at 2.27)."""


def validation_losses(model, data) -> tuple[float, float]:
    """The objective's loss and its next-token head's, on the first 64 validation graphs."""
    batch = next(iter(torch.utils.data.DataLoader(data.task.examples("val"), batch_size=64)))
    with torch.no_grad():
        loss, metrics = model._loss(batch)
    return loss.item(), metrics["loss/head_1"].item()


@pytest.fixture(scope="module")
def trained(reverse_lm, tmp_path_factory):
    """label -> (loss before, loss after, next-token loss after, the trainer's logged metrics), each objective
    trained once for the tests below."""
    done = {}

    def train(label: str):
        if label not in done:
            make = dict(OBJECTIVES)[label]
            data = TaskData(options=STAR, batch_size=32)
            model = ObjectiveLM("nano", make(reverse_lm), vocab_size=data.vocab_size, lr=3e-3, warmup_steps=10)
            before, _ = validation_losses(model, data)
            # clipped as the shipped sweeps are: an auxiliary gradient that dominates the norm shrinks NTP's
            trainer = L.Trainer(max_steps=250, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, limit_val_batches=0, gradient_clip_val=1.0,
                                default_root_dir=tmp_path_factory.mktemp("fit"))
            trainer.fit(model, data)
            done[label] = (before, *validation_losses(model, data), dict(trainer.callback_metrics))
        return done[label]

    return train


@pytest.mark.parametrize("label", [label for label, _ in OBJECTIVES])
def test_objective_lowers_its_loss_on_the_star_graph(label, trained):
    before, after, _, metrics = trained(label)
    assert after < 0.7 * before, (label, before, after)
    assert "train/loss/head_1" in metrics


@pytest.mark.parametrize("label", [label for label, _ in OBJECTIVES if label not in ("ntp", "teacherless")])
def test_no_objective_starves_its_next_token_head(label, trained):
    """Teacherless is left out: its next-token head reads dummies, not the answer, by design."""
    _, _, head_1, _ = trained(label)
    _, _, ntp_head_1, _ = trained("ntp")
    assert head_1 <= HEAD_1_SLACK * ntp_head_1, (label, head_1, ntp_head_1)
