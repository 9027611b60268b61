"""The analytic FLOPs per token of every objective equal what torch's FLOP counter counts on the real step."""

from __future__ import annotations

import pytest
import torch

import objectives
from suite.model import Trunk
from suite.module import training_flops
from suite.overhead import analytic_flops_per_token
from suite.sizes import ModelConfig
from suite.checkpoints import attach

OPTIONS = {"ntp": {}, "parallel_mtp": {"n": 3}, "causal_mtp": {"n": 3}, "sequential_mtp": {"depth": 2},
           "fsp_bow": {"tau": 4}, "fsp_revlm": {}}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_analytic_flops_per_token_equal_the_counted_ones(name, reverse_lm):
    config = ModelConfig.from_name("nano", vocab_size=23)
    options = {**OPTIONS[name], **({"reverse_lm": str(reverse_lm)} if name == "fsp_revlm" else {})}
    objective = objectives.build(name, **options)
    trunk = Trunk(config)
    attach(objective, trunk)
    batch, seq_len = 3, 32
    counted = training_flops(config, objective, (batch, seq_len))
    assert analytic_flops_per_token(trunk, objective, seq_len) * batch * seq_len == counted


def test_the_analytic_count_of_next_token_prediction_by_hand():
    config = ModelConfig(n_layer=2, d_model=16, n_head=2, vocab_size=23)
    trunk = Trunk(config)
    objective = objectives.build("ntp")
    objective.attach(trunk)
    matrices = sum(module.weight.numel() for module in trunk.blocks.modules() if isinstance(module, torch.nn.Linear))
    seq_len = 10
    attention = 2 * 4 * seq_len * 16  # per layer: QK^T and AV, 2 FLOPs per multiply-add, T * d each
    forward = 2 * matrices + attention + 2 * 23 * 16  # blocks, attention scores, the unembedding
    assert analytic_flops_per_token(trunk, objective, seq_len) == 3 * forward
