import math

import pytest
import torch
import torch.nn.functional as F

import objectives
from objectives import IGNORE, NTP, OBJECTIVES, future_targets, token_loss
from suite.errors import UsageError
from suite.model import Trunk

TOKENS = torch.tensor([[5, 3, 8, 1, 9, 2]])
X = IGNORE


def test_future_targets_by_hand():
    assert future_targets(TOKENS, 1).tolist() == [[3, 8, 1, 9, 2, X]]
    assert future_targets(TOKENS, 2).tolist() == [[8, 1, 9, 2, X, X]]
    assert future_targets(TOKENS, 5).tolist() == [[2, X, X, X, X, X]]
    assert future_targets(TOKENS, 6).tolist() == [[X, X, X, X, X, X]]


def test_future_targets_respect_the_mask_of_the_target_token():
    mask = torch.tensor([[False, False, False, True, True, True]])  # only 1, 9, 2 are targets
    assert future_targets(TOKENS, 1, mask).tolist() == [[X, X, 1, 9, 2, X]]
    assert future_targets(TOKENS, 2, mask).tolist() == [[X, 1, 9, 2, X, X]]


PACKED = torch.tensor([[5, 3, 0, 8, 1, 0, 9]])  # three documents ended by the separator 0: [5 3 0] [8 1 0] [9 ...
E = 0


def test_no_target_crosses_a_documents_end_in_a_packed_row():
    # x_{t+k} is a target at t only within t's document; the separator is its document's last token
    assert future_targets(PACKED, 1, separator=E).tolist() == [[3, E, X, 1, E, X, X]]
    assert future_targets(PACKED, 2, separator=E).tolist() == [[E, X, X, E, X, X, X]]
    assert future_targets(PACKED, 3, separator=E).tolist() == [[X, X, X, X, X, X, X]]
    assert future_targets(PACKED, 1).tolist() == [[3, E, 8, 1, E, 9, X]]  # without one: straight across


def test_every_objective_takes_the_datas_separator_for_every_head():
    """Parallel MTP's heads and FSP-BoW's window follow the separator the objective was given."""
    mtp = objectives.build("parallel_mtp", n=3)
    mtp.separator = E
    assert [targets.tolist() for targets in mtp.targets(PACKED)] == [
        [[3, E, X, 1, E, X, X]], [[E, X, X, E, X, X, X]], [[X] * 7]]
    bow = objectives.build("fsp_bow", tau=3)
    bow.separator = E
    window, _ = bow.bag(PACKED)
    assert sorted(t for t in window[0, 0].tolist() if t != X) == [E]  # x_2 only: x_3 is the next document's
    assert all(t == X for t in window[0, 2].tolist())  # after a separator: nothing of the next document


def test_token_loss_is_cross_entropy_over_valid_targets():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 3.0, 1.0]]])
    targets = torch.tensor([[0, X, 2]])
    loss, accuracy = token_loss(logits, targets)
    by_hand = (-math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1)))
               - math.log(math.exp(1) / (1 + math.exp(3) + math.exp(1)))) / 2
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert accuracy.item() == 0.5  # position 0 right (argmax 0), position 2 wrong (argmax 1)


def test_token_loss_without_targets_is_zero_not_nan():
    logits = torch.randn(1, 3, 4, requires_grad=True)
    loss, accuracy = token_loss(logits, torch.full((1, 3), X))
    loss.backward()
    assert loss.item() == 0.0 and accuracy.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


class Identity(torch.nn.Module):
    """A stand-in trunk whose final norm and unembedding are the identity, so the hidden states are the logits:
    lets a test hand-build the logits."""

    def __init__(self, vocab: int):
        super().__init__()
        self.embed, self.final_norm = torch.nn.Identity(), torch.nn.Identity()
        self.unembed = torch.nn.Linear(vocab, vocab, bias=False)
        self.unembed.weight.data = torch.eye(vocab)


def test_ntp_loss_equals_cross_entropy_on_hand_built_logits():
    logits = torch.randn(1, 6, 10)
    mask = torch.tensor([[True, True, False, True, True, True]])
    loss, metrics = NTP().loss(Identity(10), logits, TOKENS, mask)
    # predictions at t = 0, 2, 3, 4 (the token at t + 1 is a target); t = 1 predicts the unmasked 8; t = 5 has none
    expected = F.cross_entropy(logits[0, [0, 2, 3, 4]], torch.tensor([3, 1, 9, 2]))
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(metrics["loss/head_1"], expected)  # the logged value, against the hand-built one
    assert set(metrics) == {"loss/head_1", "acc/head_1"}


def test_ntp_loss_through_a_real_trunk(tiny_config):
    trunk = Trunk(tiny_config)
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 7))
    hidden = trunk(tokens)
    loss, _ = NTP().loss(trunk, hidden, tokens)
    logits = trunk.logits(hidden)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, tiny_config.vocab_size), tokens[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_ntp_draft_is_the_next_token_logits(tiny_config):
    trunk = Trunk(tiny_config)
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 5))
    drafts = NTP().draft_logits(trunk, tokens)
    assert drafts.shape == (2, 5, 1, tiny_config.vocab_size)
    torch.testing.assert_close(drafts[:, :, 0], trunk.logits(trunk(tokens)))


def test_registry_builds_by_name_and_rebuilds_from_spec():
    assert OBJECTIVES["ntp"] is NTP
    assert isinstance(objectives.build("ntp"), NTP)
    spec = NTP().spec()
    assert spec == {"class_path": "objectives.ntp.NTP", "init_args": {}}
    for ref in (spec, "ntp", "NTP", "objectives.NTP", "objectives.ntp.NTP"):
        assert isinstance(objectives.from_spec(ref), NTP)


@pytest.mark.parametrize("call, message", [
    (lambda: objectives.build("mtp9"), "unknown objective 'mtp9'; known: ntp"),
    (lambda: objectives.build("ntp", n=2), "objective ntp: unknown option 'n'; allowed: none"),
    (lambda: objectives.build("fsp_bow", tao=2), "objective fsp_bow: unknown option 'tao'; allowed: tau, weighting, "
                                                 r"loss_weight, head_layers, headwise; did you mean 'tau'\?"),
    (lambda: objectives.build("PrallelMTP"), "unknown objective 'PrallelMTP'; known: .* did you mean 'ParallelMTP'"),
    (lambda: objectives.from_spec({"class_path": "os.system"}), r"unknown objective 'os.system'; known: ntp \(NTP\)"),
])
def test_registry_errors_name_the_value(call, message):
    with pytest.raises(UsageError, match=message):
        call()


@pytest.mark.parametrize("chunk_logits", [7, 7 * 4, 2 ** 24], ids=["one row", "four rows", "one chunk"])
def test_linear_cross_entropy_matches_cross_entropy_and_its_gradients(chunk_logits):
    x = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 7, (3, 5))
    targets[0, :2] = IGNORE
    loss, mean, accuracy = objectives.linear_cross_entropy(x, weight, targets, chunk_logits=chunk_logits)
    assert not mean.requires_grad
    (3.0 * loss).backward()
    got = x.grad, weight.grad
    x.grad = weight.grad = None
    logits = x @ weight.T
    expected = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1), ignore_index=IGNORE)
    (3.0 * expected).backward()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean, expected.detach(), rtol=1e-12, atol=1e-12)  # the logged mean, independently
    torch.testing.assert_close(got[0], x.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], weight.grad, rtol=1e-12, atol=1e-12)
    valid = targets != IGNORE
    assert accuracy.item() == ((logits.argmax(-1) == targets) & valid).sum().item() / valid.sum().item()
    with torch.no_grad():
        torch.testing.assert_close(objectives.linear_cross_entropy(x, weight, targets, 1.0, chunk_logits)[0], expected)
