"""Every registered objective's defaults keep its auxiliary losses on the scale of next-token prediction at
initialisation: no auxiliary head's loss, or gradient on the trunk, outweighs the next-token head's by more than
SCALE. Measured on a batch of star graphs with a `nano` trunk, the way `ObjectiveLM` logs it before step 0."""

import pytest
import torch

import objectives
import tasks
from objectives.heads import head_scales
from suite.model import Trunk
from suite.sizes import resolve
from suite.checkpoints import attach
from tests.conftest import STAR_17

SCALE = 2.0
"""An auxiliary head may weigh up to twice the next-token head at initialisation: parallel heads, each a block
on the trunk predicting a token as hard as the next one, weigh 1.0-1.3x; a loss summed over the vocabulary or
the width weighs 10-30x."""


def defaults(name: str, reverse_lm) -> dict:
    """The options an objective cannot do without (fsp_revlm's reverse model); everything else at its default."""
    return {"reverse_lm": str(reverse_lm)} if name == "fsp_revlm" else {}


@pytest.fixture(scope="module")
def batch():
    examples = tasks.build("star_graph", **STAR_17).examples("train")
    return examples.tokens[:64], examples.loss_mask[:64]


def scales(objective, batch) -> dict[str, dict]:
    torch.manual_seed(0)
    trunk = Trunk(resolve("nano", vocab_size=23))
    attach(objective, trunk)
    return head_scales(objective, trunk, *batch)


def auxiliary_over_next_token(found: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """{auxiliary head: (its loss / head_1's, its gradient norm / head_1's)}."""
    first = found["head_1"]
    return {label: (value["loss"] / first["loss"], value["grad_norm"] / first["grad_norm"])
            for label, value in found.items() if label != "head_1"}


@pytest.mark.parametrize("name", sorted(objectives.OBJECTIVES))
def test_no_auxiliary_loss_swamps_next_token_prediction_at_its_defaults(name, batch, reverse_lm):
    objective = objectives.build(name, **defaults(name, reverse_lm))
    found = scales(objective, batch)
    assert "head_1" in found and found["head_1"]["grad_norm"] > 0  # the next-token head is always there
    for label, (loss_ratio, grad_ratio) in auxiliary_over_next_token(found).items():
        assert loss_ratio <= SCALE, (name, label, loss_ratio)
        assert grad_ratio <= SCALE, (name, label, grad_ratio)


@pytest.mark.parametrize("name, options", [("fsp_bow", {"loss_weight": 40.0}),
                                           ("parallel_mtp", {"n": 3, "head_weights": [1, 5, 1]})])
def test_the_measure_sees_an_auxiliary_loss_that_swamps(name, options, batch):
    """The check above can fail: an auxiliary head weighted up is caught, by loss and by gradient."""
    ratios = auxiliary_over_next_token(scales(objectives.build(name, **options), batch))
    assert max(loss for loss, _ in ratios.values()) > SCALE
    assert max(grad for _, grad in ratios.values()) > SCALE


def test_each_heads_scale_is_its_weighted_share_of_the_total(batch):
    """head_scales splits the objective's loss: the heads' losses add up to it, and a head's gradient norm is that
    of its weighted term alone, here rebuilt from the module's full logits and `token_loss`."""
    tokens, mask = batch
    torch.manual_seed(0)
    trunk = Trunk(resolve("nano", vocab_size=23))
    objective = objectives.build("sequential_mtp", depth=2, loss_weight=0.3)
    objective.attach(trunk)
    found = head_scales(objective, trunk, tokens, mask)
    assert list(found) == ["head_1", "head_2", "head_3"]
    total, _ = objective.loss(trunk, trunk(tokens), tokens, mask)
    assert sum(value["loss"] for value in found.values()) == pytest.approx(total.item(), rel=1e-6)
    module_1 = objective.module_logits(trunk, tokens)[0]  # predicts x_{t+2}
    term = 0.3 / 2 * objectives.token_loss(module_1, objectives.future_targets(tokens, 2, mask))[0]
    grads = torch.autograd.grad(term, list(trunk.parameters()), allow_unused=True)
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)).item()
    assert found["head_2"]["loss"] == pytest.approx(term.item(), rel=1e-5)
    assert found["head_2"]["grad_norm"] == pytest.approx(norm, rel=1e-4)
