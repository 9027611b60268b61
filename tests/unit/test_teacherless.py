"""Teacherless training (a planning control): the answer's inputs are a dummy token, the targets are next-token
prediction's, and the model answers in one pass over the prompt and dummies."""

import pytest
import torch

from objectives import NTP, Teacherless, token_loss
from objectives.heads import head_scales
from suite.checkpoints import answering_objective
from suite.decoding import generate
from suite.errors import UsageError
from suite.model import Trunk
from suite.sizes import ModelConfig

TOKENS = torch.tensor([[7, 8, 9, 10, 11, 12]])
MASK = torch.tensor([[False, False, False, True, True, True]])  # a prompt of 3 tokens, an answer of 3


class Model:
    def __init__(self, trunk, objective):
        self.trunk, self.objective = trunk, objective


def test_the_answer_inputs_are_the_dummy_token_by_hand():
    assert Teacherless().inputs(TOKENS, MASK).tolist() == [[7, 8, 9, 0, 0, 0]]
    assert Teacherless(dummy_token=3).inputs(TOKENS, MASK).tolist() == [[7, 8, 9, 3, 3, 3]]


def test_the_loss_is_next_token_cross_entropy_on_the_blanked_inputs(tiny_config):
    trunk = Trunk(tiny_config)
    objective = Teacherless()
    loss, metrics = objective.loss(trunk, objective.hidden(trunk, TOKENS, MASK), TOKENS, MASK)
    logits = trunk.logits(trunk(torch.tensor([[7, 8, 9, 0, 0, 0]])))
    # position t predicts x_{t+1} where x_{t+1} is an answer token: positions 2, 3, 4 predict 10, 11, 12
    targets = torch.tensor([[-100, -100, 10, 11, 12, -100]])
    torch.testing.assert_close(loss, token_loss(logits, targets)[0])
    assert set(metrics) == {"loss/head_1", "acc/head_1"}


def test_no_answer_token_is_read_before_it_is_predicted(tiny_config):
    trunk, objective = Trunk(tiny_config), Teacherless()
    changed = TOKENS.clone()
    changed[0, 3:] = torch.tensor([1, 2, 3])  # other answers: the inputs, hence every prediction, stay the same
    with torch.no_grad():
        torch.testing.assert_close(objective.hidden(trunk, changed, MASK), objective.hidden(trunk, TOKENS, MASK))
        assert not torch.allclose(NTP().hidden(trunk, changed), NTP().hidden(trunk, TOKENS))


def test_it_answers_in_one_pass_over_the_prompt_and_dummies(tiny_config):
    trunk, objective = Trunk(tiny_config), Teacherless()
    prompts = torch.randint(3, 23, (4, 5))
    out, stats = generate(Model(trunk, objective), prompts, 3)
    with torch.no_grad():
        expected = trunk.logits(trunk(torch.cat([prompts, torch.zeros(4, 2, dtype=torch.long)], 1)))[:, 4:].argmax(-1)
    assert torch.equal(out, expected) and stats.trunk_passes == 1
    greedy, _ = generate(Model(trunk, NTP()), prompts, 3)
    assert torch.equal(greedy[:, 0], out[:, 0])  # the first answer token is read off the prompt alike
    with pytest.raises(UsageError, match="has no heads that draft tokens"):
        generate(Model(trunk, objective), prompts, 3, speculative=True)


def test_a_checkpoint_answers_with_its_objective_when_that_decodes_in_one_pass():
    assert isinstance(answering_objective({"hyper_parameters": {"objective": Teacherless().spec()}}), Teacherless)
    parallel = {"class_path": "objectives.parallel_mtp.ParallelMTP", "init_args": {"n": 2}}
    assert type(answering_objective({"hyper_parameters": {"objective": parallel}})) is NTP


def test_it_adds_no_auxiliary_loss(tiny_config):
    tokens, mask = torch.randint(0, 23, (4, 8)), torch.rand(4, 8) > 0.5
    assert list(head_scales(Teacherless(), Trunk(tiny_config), tokens, mask)) == ["head_1"]


def test_bad_input():
    with pytest.raises(UsageError, match="teacherless dummy_token=-1 is out of range"):
        Teacherless(dummy_token=-1)
    with pytest.raises(UsageError, match="teacherless dummy_token=99 is not in the vocabulary; allowed: 0 .. 22"):
        Teacherless(dummy_token=99).attach(Trunk(ModelConfig(vocab_size=23)))
    with pytest.raises(UsageError, match="needs a loss mask"):
        Teacherless().loss(None, None, TOKENS, None)
