import math

import pytest
import torch

from suite.errors import UsageError
from suite.model import Trunk
from suite.quantize import KVQuant, rotation
from suite.sizes import ModelConfig


def test_a_2_bit_group_lands_on_its_four_levels_by_hand():
    # min 0, max 3: scale (3 - 0) / (2^2 - 1) = 1, levels 0, 1, 2, 3: 0.4 rounds to 0, 0.6 to 1;
    # min -1, max 2: scale 1, levels -1, 0, 1, 2: 0.2 (1.2 steps up) to 0, 0.6 (1.6 steps) to 1
    x = torch.tensor([[0.0, 0.4, 0.6, 3.0], [-1.0, 2.0, 0.2, 0.6]])
    assert KVQuant(bits=2)(x).tolist() == [[0.0, 0.0, 1.0, 3.0], [-1.0, 2.0, 0.0, 1.0]]
    # groups of 2: each group's two values are its minimum and maximum, both kept exactly
    grouped = KVQuant(bits=2, group=2)(torch.tensor([0.0, 0.4, 0.6, 3.0]))
    assert torch.allclose(grouped, torch.tensor([0.0, 0.4, 0.6, 3.0]))  # two points per group: both exact
    three = KVQuant(bits=2, group=4)(torch.tensor([0.0, 1.2, 1.4, 6.0]))  # scale 2: levels 0, 2, 4, 6
    assert three.tolist() == [0.0, 2.0, 2.0, 6.0]


def test_8_bit_error_is_within_half_a_step_and_a_constant_group_is_exact():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16)
    restored = KVQuant(bits=8, group=8)(x)
    grouped = x.view(3, 5, 2, 8)
    step = (grouped.amax(-1) - grouped.amin(-1)) / 255
    assert ((restored - x).view(3, 5, 2, 8).abs() <= step[..., None] / 2 + 1e-6).all()
    assert KVQuant(bits=4)(torch.full((2, 8), 0.3)).tolist() == torch.full((2, 8), 0.3).tolist()


def test_the_1_bit_code_is_the_sign_scaled_to_keep_the_norm():
    x = torch.tensor([3.0, -4.0, 0.0, 0.0])  # norm 5 over 4 channels: +-5/2 each
    assert KVQuant(bits=1)(x).tolist() == [2.5, -2.5, 2.5, 2.5]
    assert KVQuant(bits=1, group=2)(x).tolist() == pytest.approx([5 / math.sqrt(2), -5 / math.sqrt(2), 0.0, 0.0])
    torch.manual_seed(1)
    y = torch.randn(6, 8)
    assert torch.allclose(KVQuant(bits=1)(y).norm(dim=-1), y.norm(dim=-1))


def test_the_rotation_is_orthogonal_fixed_and_leaves_scores_unchanged_before_quantising():
    turn = rotation(16, 0)
    assert torch.allclose(turn @ turn.T, torch.eye(16), atol=1e-6)
    assert torch.equal(rotation(16, 0), turn) and not torch.allclose(rotation(16, 1), turn)
    torch.manual_seed(2)
    q, k = torch.randn(4, 16), torch.randn(7, 16)
    assert torch.allclose((q @ turn) @ (k @ turn).T, q @ k.T, atol=1e-5)
    # rotate, quantise, rotate back: at 8 bits close to the input, and not the unrotated quantiser's output
    x = torch.randn(5, 16)
    rotated = KVQuant(bits=8, rotate=True)(x)
    assert torch.allclose(rotated, x, atol=0.05) and not torch.allclose(rotated, KVQuant(bits=8)(x))
    two = KVQuant(bits=2, rotate=True)(x)
    assert torch.allclose(two, KVQuant(bits=2)(x @ turn) @ turn.T, atol=1e-6)


def test_a_rotation_spreads_an_outlier_channel_and_lowers_the_error():
    torch.manual_seed(3)
    x = torch.randn(200, 32)
    x[:, 5] *= 30  # one outlier channel: every group's range is its
    plain = (KVQuant(bits=4)(x) - x).norm()
    turned = (KVQuant(bits=4, rotate=True)(x) - x).norm()
    assert turned < plain


@pytest.mark.parametrize("options, message", [
    (dict(bits=3), "kv_bits=3 is not a supported width; allowed: 1, 2, 4, 8, 16"),
    (dict(bits=32), "kv_bits=32 is not a supported width"),
    (dict(bits=16, rotate=True), "kv_rotate needs a quantised cache; allowed: with kv_bits 1, 2, 4 or 8"),
    (dict(bits=16, group=8), "kv_group=8 needs a quantised cache"),
    (dict(bits=4, group=0), "kv_group=0 is out of range; allowed: >= 1"),
])
def test_bad_options_are_one_line_usage_errors(options, message):
    with pytest.raises(UsageError, match=message) as err:
        KVQuant.of(**options)
    assert "\n" not in str(err.value)


def test_a_group_that_does_not_divide_the_head_dimension_is_refused():
    with pytest.raises(UsageError, match="kv_group=5 does not divide the head dimension 16; allowed: a divisor of 16"):
        KVQuant.of(bits=4, group=5).check(16)
    assert KVQuant.of(bits=16) is None


@pytest.fixture(scope="module")
def trunk() -> Trunk:
    torch.manual_seed(0)
    return Trunk(ModelConfig(vocab_size=40, n_layer=2, d_model=32, n_head=2)).eval()


def test_a_trunk_without_quantisation_is_unchanged_and_with_it_reads_what_the_cache_holds(trunk):
    tokens = torch.randint(40, (3, 12))
    with torch.no_grad():
        plain = trunk(tokens)
        cache = trunk.new_cache(3, 12)
        assert cache.quant is None and torch.equal(trunk(tokens, cache), plain)
        trunk.kv_quant = KVQuant(bits=2)
        try:
            quantised = trunk(tokens)
            cached = trunk.new_cache(3, 12)
            assert cached.quant == KVQuant(bits=2)
            assert torch.allclose(trunk(tokens, cached), quantised, atol=1e-6)  # one forward or a cache: the same
            assert torch.equal(cached.k[0, :, :, :12], KVQuant(bits=2)(cached.k[0, :, :, :12]))  # levels stay put
            maps = trunk.attention_weights(tokens)
        finally:
            trunk.kv_quant = None
        assert not torch.allclose(quantised, plain, atol=1e-3)
        assert torch.equal(trunk(tokens), plain)  # switched off again: bit for bit
        assert torch.allclose(maps.sum(-1), torch.ones(maps.shape[:-1])) and not torch.allclose(
            maps, trunk.attention_weights(tokens), atol=1e-4)  # the probe sees the quantised keys


@pytest.mark.parametrize("quant", [KVQuant(bits=4, group=8), KVQuant(bits=1, rotate=True)])
def test_incremental_decoding_reads_the_same_compressed_cache_as_a_full_pass(trunk, quant):
    """Each token's keys are quantised alone, so a cache filled a token at a time holds what one pass over the
    whole sequence reads: the last position's logits agree."""
    tokens = torch.randint(40, (2, 10))
    trunk.kv_quant = quant
    try:
        with torch.no_grad():
            full = trunk.logits(trunk(tokens))
            cache = trunk.new_cache(2, 10)
            trunk(tokens[:, :6], cache)
            steps = [trunk.logits(trunk(tokens[:, t: t + 1], cache)) for t in range(6, 10)]
    finally:
        trunk.kv_quant = None
    assert torch.allclose(torch.cat(steps, dim=1), full[:, 6:], atol=1e-5)
