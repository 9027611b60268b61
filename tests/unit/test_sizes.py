import dataclasses

import pytest

from objectives import NTP
from suite.errors import UsageError
from suite.model import Trunk
from suite.overhead import size_table
from suite.sizes import SIZES, ModelConfig, count_parameters


def test_the_contracted_sizes_exist_and_only_override_known_fields():
    assert {"nano", "micro", "tiny", "small", "base", "large", "1b"} <= set(SIZES)
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for name, overrides in SIZES.items():
        assert set(overrides) <= fields, name
        assert ModelConfig.from_name(name).name == name


def test_nano_parameter_count_by_hand():
    V, d, L = 26, 64, 2
    ff = 192  # 8/3 * 64 = 170.7, rounded up to a multiple of 64
    per_block = d * 3 * d + d * d + d * 2 * ff + ff * d + 2 * d  # qkv, out, gate_up, down, two norm gains
    trunk = Trunk(ModelConfig.from_name("nano", vocab_size=V))
    assert count_parameters(trunk, NTP()) == {
        "trunk": L * per_block, "shared": V * d + d, "objective": 0, "frozen": 0, "total": V * d + L * per_block + d}


def test_untied_embeddings_count_twice_and_shared_tensors_once():
    config = ModelConfig(n_layer=1, d_model=8, n_head=2, vocab_size=10)
    assert count_parameters(Trunk(config))["shared"] == 80 + 8
    assert count_parameters(Trunk(config.replace(tie_embeddings=False)))["shared"] == 160 + 8


@pytest.mark.parametrize("name, low, high", [("nano", 0.09e6, 0.12e6), ("base", 110e6, 140e6),
                                             ("large", 330e6, 380e6), ("1b", 0.95e9, 1.15e9)])
def test_sizes_are_the_advertised_scale(name, low, high):
    row = next(r for r in size_table(32000) if r["size"] == name)
    total = row["trunk"] if name == "nano" else row["total"]
    assert low <= total <= high, (name, total)


def test_training_flops_per_token_by_hand_at_nano():
    from objectives import ParallelMTP

    V, d, T, L, ff, heads = 100, 64, 8, 2, 192, 4
    block = 2 * (3 * d * d + d * d + 3 * d * ff) + 4 * T * heads * (d // heads)  # matmuls, then QK^T and AV
    ntp = 3 * (L * block + 2 * V * d)  # forward + backward: three forward passes; the unembedding once
    mtp = 3 * ((L + 1) * block + 2 * 2 * V * d)  # n = 2: one more block, a second unembedding
    (nano,) = [row for row in size_table(V, NTP(), seq_len=T) if row["size"] == "nano"]
    assert nano["train FLOP/token"] == ntp == 689_664 and nano["x NTP"] == 1.0
    (nano,) = [row for row in size_table(V, ParallelMTP(n=2), seq_len=T) if row["size"] == "nano"]
    assert nano["train FLOP/token"] == mtp and nano["x NTP"] == round(mtp / ntp, 3)
    assert "x NTP" not in size_table(V)[0]  # only when a context is given


def test_size_table_builds_on_meta_without_allocating():
    rows = size_table(32000)
    assert [r["size"] for r in rows] == list(SIZES)
    assert all(r["total"] == r["trunk"] + r["shared"] + r["objective"] for r in rows)


@pytest.mark.parametrize("bad, message", [
    (dict(d_model=30, n_head=4), "d_model=30 is not divisible by n_head=4"),
    (dict(n_layer=0), "model n_layer=0 is out of range"),
    (dict(d_model=12, n_head=4), "head_dim=3 must be even"),
    (dict(n_head=4, n_kv_head=3), "n_head=4 is not divisible by n_kv_head=3"),
])
def test_bad_shapes_are_usage_errors(bad, message):
    with pytest.raises(UsageError, match=message):
        ModelConfig(**bad)


def test_unknown_size_lists_the_known_ones():
    with pytest.raises(UsageError, match="unknown size 'giant'; known: nano, micro, tiny, small, base, large, 1b"):
        ModelConfig.from_name("giant")


def test_ffn_width_rule():
    assert ModelConfig(d_model=768, n_head=12).ffn_dim == 2048
    assert ModelConfig(d_model=64, n_head=4, d_ff=100).ffn_dim == 100
