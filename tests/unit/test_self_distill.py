"""Self-distilled heads learn the trunk's own next-token predictions: head k at t, the trunk's greedy token (or
its distribution) at t + k - 1, where the data has a target x_{t+k} in the same document; head 1, the data."""

import pytest
import torch
import torch.nn.functional as F

import objectives
from objectives import IGNORE, future_targets, token_loss
from objectives.heads import run_blocks
from suite.model import Trunk
from suite.sizes import resolve

SEP = 2


@pytest.fixture
def batch():
    torch.manual_seed(0)
    tokens = torch.randint(3, 23, (2, 11))
    tokens[0, 4] = SEP  # row 0 packs two documents
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[1, :3] = False  # row 1 has a prompt
    return tokens, mask


def built(target: str, n: int = 3):
    torch.manual_seed(1)
    trunk = Trunk(resolve("nano", vocab_size=23))
    objective = objectives.build("self_distill_mtp", n=n, target=target)
    objective.attach(trunk)
    objective.separator = SEP
    return trunk, objective


def test_the_greedy_heads_targets_are_the_trunks_argmax_shifted_where_the_data_has_a_target(batch):
    tokens, mask = batch
    trunk, objective = built("greedy")
    with torch.no_grad():
        hidden = trunk(tokens)
        _, metrics = objective.loss(trunk, hidden, tokens, mask)
        greedy = trunk.logits(hidden).argmax(-1)
        for k in (2, 3):
            expected = torch.full_like(tokens, IGNORE)
            for b in range(2):
                for t in range(tokens.shape[1] - k + 1):  # the trunk's token for x_{t+k}, read at t + k - 1
                    expected[b, t] = greedy[b, t + k - 1]
            expected = expected.masked_fill(future_targets(tokens, k, mask, SEP) == IGNORE, IGNORE)
            assert expected[0, 3] == IGNORE and expected[0, 2 if k == 3 else 3] == IGNORE  # x_{t+k} past the SEP
            assert (expected[1, : 3 - k] == IGNORE).all()  # the prompt is no target
            logits = trunk.logits(run_blocks(trunk, objective.heads[k - 2], hidden))
            assert metrics[f"loss/head_{k}"] == pytest.approx(token_loss(logits, expected)[0].item(), rel=1e-5)
        assert metrics["loss/head_1"] == pytest.approx(
            token_loss(trunk.logits(hidden), future_targets(tokens, 1, mask, SEP))[0].item(), rel=1e-5)


def test_the_distribution_heads_loss_is_the_kl_divergence_from_the_trunks_next_token_distribution(batch):
    tokens, mask = batch
    trunk, objective = built("distribution", n=2)
    hidden = trunk(tokens)
    loss, metrics = objective.loss(trunk, hidden, tokens, mask)
    with torch.no_grad():
        teacher = F.softmax(trunk.logits(hidden), -1)[:, 1:]
        student = F.log_softmax(trunk.logits(run_blocks(trunk, objective.heads[0], hidden)), -1)[:, :-1]
        kl = (teacher * (teacher.log() - student)).sum(-1)
        valid = (future_targets(tokens, 2, mask, SEP) != IGNORE)[:, :-1]
    assert metrics["loss/head_2"] == pytest.approx((kl[valid].mean()).item(), rel=1e-5)
    assert loss.item() == pytest.approx(metrics["loss/head_1"].item() + metrics["loss/head_2"].item(), rel=1e-5)
    loss.backward()
    assert objective.heads[0][0].attn.qkv.weight.grad.abs().sum() > 0


def test_the_teacher_gets_no_gradient_from_the_distilled_heads(batch):
    """Only head 1 (the data) trains the trunk; what heads 2..n learn flows into their own blocks, and into the
    trunk only through their input, never through the teacher's targets."""
    tokens, mask = batch
    trunk, objective = built("distribution", n=2)
    hidden = trunk(tokens)
    teacher = objective.teacher_logits(trunk, hidden)
    assert not teacher.requires_grad
