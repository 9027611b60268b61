"""ObjectiveLM and TaskData through a real Lightning Trainer, without the CLI."""

import lightning as L
import pytest
import torch

from objectives import NTP
from suite import ObjectiveLM, TaskData
from suite.errors import UsageError

OPTIONS = {"num_train": 640, "num_val": 64, "num_test": 64}


def trainer(tmp_path, **kw):
    return L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, **kw)


def test_fit_lowers_the_loss_and_logs_what_overhead_reports_read(tmp_path):
    data = TaskData(options=OPTIONS, batch_size=32)
    model = ObjectiveLM("nano", NTP(), vocab_size=data.vocab_size, lr=3e-3, warmup_steps=5)
    with torch.no_grad():
        batch = next(iter(torch.utils.data.DataLoader(data.task.examples("val"), batch_size=64)))
        before = model._loss(batch)[0].item()
    t = trainer(tmp_path, max_steps=150, val_check_interval=150, check_val_every_n_epoch=None, num_sanity_val_steps=0)
    t.fit(model, data)
    after = t.callback_metrics["val/loss"].item()
    assert after < before - 1.0, (before, after)  # from ~ln(26) towards the answer-token entropy
    assert model.tokens_seen == 150 * 32 * 26
    assert model.flops_per_batch > 6 * 32 * 26 * 100_000  # at least 6 * params * tokens
    for key in ("train/loss", "train/loss/head_1", "train/acc/head_1", "train/tokens_seen",
                "val/star_graph/path_acc", "val/star_graph/arm_acc", "val/star_graph/random_arm_acc"):
        assert key in t.callback_metrics, key
    assert t.callback_metrics["val/star_graph/random_arm_acc"].item() == pytest.approx(0.5)


def test_checkpoint_round_trip_gives_the_same_logits(tmp_path):
    data = TaskData(options=OPTIONS, batch_size=16)
    model = ObjectiveLM("nano", vocab_size=data.vocab_size)
    t = trainer(tmp_path, max_steps=3, num_sanity_val_steps=0, limit_val_batches=0)
    t.fit(model, data)
    path = tmp_path / "model.ckpt"
    t.save_checkpoint(path)
    loaded = ObjectiveLM.load_from_checkpoint(path)
    tokens = data.task.examples("test").tokens[:4]
    torch.testing.assert_close(loaded(tokens), model(tokens), rtol=0, atol=0)
    assert loaded.config == model.config and isinstance(loaded.objective, NTP)


def test_compiled_checkpointed_training_takes_the_eager_steps(tmp_path):
    """--model.compile and --model.checkpoint_heads change how a step runs, not what it computes: three steps of
    parallel MTP give the eager run's weights to float tolerance; the checkpoint loads without them (they are the
    run's config, not the model's)."""
    from objectives import ParallelMTP
    from suite.model import Block

    weights = []
    for fast in (False, True):
        L.seed_everything(0, verbose=False)
        data = TaskData(options=OPTIONS, batch_size=16)
        model = ObjectiveLM("nano", ParallelMTP(n=2), vocab_size=data.vocab_size, compile=fast, checkpoint_heads=fast)
        t = trainer(tmp_path / str(fast), max_steps=3, num_sanity_val_steps=0, limit_val_batches=0)
        t.fit(model, data)
        blocks = [m for m in model.modules() if isinstance(m, Block)]
        assert len(blocks) == 3 and all(block.compiled == fast for block in blocks)
        weights.append(model.state_dict())
        path = tmp_path / f"{fast}.ckpt"
        t.save_checkpoint(path)
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], rtol=1e-4, atol=1e-5)  # an Adam step is 1e-3
    loaded = ObjectiveLM.load_from_checkpoint(path)
    assert "compile" not in loaded.hparams and not loaded.execution.compile


def test_test_split_scores_are_logged(tmp_path):
    data = TaskData(options=OPTIONS, eval_batch_size=32)
    model = ObjectiveLM("nano", vocab_size=data.vocab_size)
    metrics = trainer(tmp_path).test(model, data, verbose=False)[0]
    assert 0.0 <= metrics["test/star_graph/path_acc"] <= 1.0
    assert metrics["test/star_graph/random_arm_acc"] == pytest.approx(0.5)


def test_schedule_warms_up_then_decays_to_the_floor(tmp_path):
    data = TaskData(options=OPTIONS, batch_size=16)
    model = ObjectiveLM("nano", vocab_size=data.vocab_size, lr=1e-2, warmup_steps=4, min_lr_ratio=0.1)
    lrs = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    t = trainer(tmp_path, max_steps=20, limit_val_batches=0, callbacks=[Record()])
    t.fit(model, data)
    # linear from lr / warmup at step 0 to the peak at step `warmup`, then cosine over the remaining 16 steps
    assert lrs[:5] == pytest.approx([1e-2 * f for f in (0.25, 0.4375, 0.625, 0.8125, 1.0)])
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == pytest.approx(1e-3 + 0.5 * 9e-3 * (1 + torch.cos(torch.tensor(15 / 16 * torch.pi)).item()))


def test_module_rejects_bad_hyperparameters():
    with pytest.raises(UsageError, match="min_lr_ratio=2.0 is out of range; allowed: in \\[0.0, 1.0\\]"):
        ObjectiveLM("nano", vocab_size=10, min_lr_ratio=2.0)
    with pytest.raises(UsageError, match="unknown objective 'mtp'"):
        ObjectiveLM("nano", objective="mtp", vocab_size=10)


def test_validation_logs_every_heads_plan_and_gradient(tmp_path):
    """A multi-token model's validation: each head's teacher-forced accuracy on every answer token, the first step
    by head, plan decoding, and each extra head's gradient against the next-token head's, on one Lightning fit.
    The logged first step is the logged plan at the branch token, and plan decoding by head 1's drafts alone would
    be greedy decoding (its path accuracy is next-token decoding's, here as a check of the wiring)."""
    from objectives import ParallelMTP

    data = TaskData(options=OPTIONS, batch_size=32, eval_batch_size=64)
    model = ObjectiveLM("nano", ParallelMTP(n=3, head_layers=0, branch_layer=1), vocab_size=data.vocab_size, lr=3e-3,
                        warmup_steps=5)
    t = trainer(tmp_path, max_steps=60, val_check_interval=60, check_val_every_n_epoch=None, num_sanity_val_steps=0)
    t.fit(model, data)
    logged = {key: value.item() for key, value in t.callback_metrics.items()}
    for k in (1, 2, 3):
        assert logged[f"val/star_graph/first_step/head_{k}"] == logged[f"val/star_graph/plan/head_{k}/token_1"]
        assert all(f"val/star_graph/plan/head_{k}/token_{i}" in logged for i in range(5))
        assert logged[f"val/grad/norm/head_{k}"] > 0
    for rule in ("head_2", "head_3", "vote"):
        assert 0 <= logged[f"val/star_graph/decode_{rule}/path_acc"] <= logged[f"val/star_graph/decode_{rule}/arm_acc"]
    assert "val/star_graph/decode_head_1/path_acc" not in logged  # head 1's drafts are next-token decoding
    for k in (2, 3):
        assert -1 <= logged[f"val/grad/cos/head_{k}"] <= 1
    assert "val/grad/cos/head_1" not in logged
