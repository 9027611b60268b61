"""Stacked heads (`objectives.stack`) against running each head block on its own: with and without a KV cache, after
the heads' weights change (refresh), and counted in dispatched operations: parallel MTP's drafting costs the
operations of one head whatever n is."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from objectives import CausalMTP, ParallelMTP
from objectives.heads import run_blocks
from objectives.stack import refresh, stack_blocks
from suite.model import Trunk
from suite.sizes import ModelConfig

CONFIG = ModelConfig(n_layer=2, d_model=32, n_head=4, vocab_size=13, init_std=0.3)


def one_by_one(trunk, blocks, x, cache=None):
    """Each block on its group of rows of x [G * B, T, D], separately: the reference."""
    groups = x.view(len(blocks), -1, *x.shape[1:])
    caches = cache or [None] * len(blocks)
    return torch.cat([run_blocks(trunk, [block], group, c) for block, group, c in zip(blocks, groups, caches)])


KINDS = {  # the trunk's own, and the features of other architectures that change a block's parameters
    "llama": CONFIG,
    "gpt_neox-like": CONFIG.replace(norm="layer", qkv_bias=True, out_bias=True, gated=False, activation="gelu",
                                    parallel_residual=True, rotary_fraction=0.25),
    "gemma-like": CONFIG.replace(norm_offset=1.0, activation="gelu_tanh", d_head=16, n_kv_head=2),
}


@pytest.mark.parametrize("config", KINDS.values(), ids=KINDS)
@torch.no_grad()
def test_a_stacked_block_runs_each_block_on_its_rows(config):
    trunk = Trunk(config)
    blocks = [trunk.make_block() for _ in range(3)]
    for block in blocks:  # norms and biases off their initial ones, so each group's own are seen
        for name, parameter in block.named_parameters():
            if parameter.dim() == 1:
                parameter.uniform_(0.5, 1.5)
    x = torch.randn(3 * 2, 7, config.d_model)
    stacked = stack_blocks(blocks)
    torch.testing.assert_close(run_blocks(trunk, [stacked], x), one_by_one(trunk, blocks, x), rtol=0, atol=1e-5)


@torch.no_grad()
def test_a_stacked_block_over_a_kv_cache_equals_each_block_over_its_own():
    trunk = Trunk(CONFIG)
    blocks = [trunk.make_block() for _ in range(3)]
    stacked = stack_blocks(blocks)
    x = torch.randn(3 * 2, 9, CONFIG.d_model)
    cache = trunk.new_cache(6, 9, 1)
    caches = [trunk.new_cache(2, 9, 1) for _ in blocks]
    for a, b in ((0, 4), (4, 5), (5, 9)):
        torch.testing.assert_close(run_blocks(trunk, [stacked], x[:, a:b], cache),
                                   one_by_one(trunk, blocks, x[:, a:b], caches), rtol=0, atol=1e-5)


@torch.no_grad()
def test_a_stacked_block_reads_new_weights_on_refresh_only():
    trunk = Trunk(CONFIG)
    blocks = [trunk.make_block() for _ in range(2)]
    stacked = stack_blocks(blocks)
    x = torch.randn(4, 5, CONFIG.d_model)
    before = one_by_one(trunk, blocks, x)
    blocks[1].mlp.down.weight.mul_(-2.0)  # a training step, say
    after = one_by_one(trunk, blocks, x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(run_blocks(trunk, [stacked], x), before, rtol=0, atol=1e-5)  # a copy: stale
    refresh(stacked)
    torch.testing.assert_close(run_blocks(trunk, [stacked], x), after, rtol=0, atol=1e-5)


def test_blocks_with_parameters_outside_linear_layers_and_norms_are_refused():
    trunk = Trunk(CONFIG)
    blocks = [trunk.make_block() for _ in range(2)]
    for block in blocks:
        block.scale = nn.Parameter(torch.ones(()))
    with pytest.raises(ValueError, match=r"cannot group the parameters \['scale'\]"):
        stack_blocks(blocks)


class Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def drafting_ops(objective) -> int:
    """Operations dispatched by one in-pass drafting call over 4 positions (after the prompt's 5)."""
    trunk = Trunk(CONFIG)
    objective.attach(trunk)
    states = objective.pass_drafter(trunk, 1, 16, None)
    cache = trunk.new_cache(1, 16)
    states(trunk(torch.randint(0, 13, (1, 5)), cache))
    hidden = trunk(torch.randint(0, 13, (1, 4)), cache)
    with Ops() as ops:
        assert states(hidden).shape == (1, 4, objective.n - 1, CONFIG.d_model)
    return ops.count


def test_parallel_heads_draft_with_the_operations_of_one_head():
    assert drafting_ops(ParallelMTP(n=3, layout="stacked")) == drafting_ops(ParallelMTP(n=5, layout="stacked")) \
        == drafting_ops(ParallelMTP(n=8, layout="stacked"))
    assert drafting_ops(ParallelMTP(n=5, layout="siblings")) == drafting_ops(ParallelMTP(n=3, layout="siblings"))
    assert drafting_ops(ParallelMTP(n=5, head_layers=0)) == drafting_ops(ParallelMTP(n=3, head_layers=0))
    # a chain cannot be stacked: each causal head adds its own
    assert drafting_ops(CausalMTP(n=5)) > drafting_ops(CausalMTP(n=3)) > drafting_ops(ParallelMTP(n=3))


@torch.no_grad()
def test_drafters_share_one_stack_of_the_heads_and_it_follows_their_weights():
    trunk = Trunk(CONFIG)
    objective = ParallelMTP(n=3, layout="stacked")
    objective.attach(trunk)
    first = objective._stacked_heads()
    assert objective._stacked_heads() is first  # a drafter per `generate` call: the stack is made once
    down = objective.heads[1][0].mlp.down.weight
    down.mul_(-1.0)  # an optimizer step, say
    assert objective._stacked_heads() is first
    assert torch.equal(first[0].mlp.down.weight[1], down.t())
    assert "_stacks" not in dict(objective.named_modules()) and not any("_stacks" in k for k in objective.state_dict())
    objective.double()
    again = objective._stacked_heads()
    assert again is not first and again[0].mlp.down.weight.dtype == torch.float64
