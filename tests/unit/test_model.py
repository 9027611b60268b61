import pytest
import torch

from suite.model import KVCache, Trunk
from suite.sizes import ModelConfig


@pytest.mark.parametrize("t", [0, 3, 7])
def test_trunk_is_causal(tiny_config, t):
    trunk = Trunk(tiny_config).eval()
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 9))
    changed = tokens.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 5) % tiny_config.vocab_size
    with torch.no_grad():
        before, after = trunk(tokens), trunk(changed)
    torch.testing.assert_close(before[:, : t + 1], after[:, : t + 1], rtol=0, atol=1e-6)
    if t + 1 < tokens.shape[1]:
        assert not torch.allclose(before[:, t + 1:], after[:, t + 1:])


def test_gradients_do_not_flow_from_the_past_to_the_future(tiny_config):
    trunk = Trunk(tiny_config)
    embedded = torch.randn(1, 6, tiny_config.d_model, requires_grad=True)
    trunk.embed.forward = lambda ids: embedded  # feed chosen embeddings straight into the blocks
    hidden = trunk(torch.zeros(1, 6, dtype=torch.long))
    hidden[0, 2].sum().backward()
    assert embedded.grad[0, 3:].abs().sum() == 0
    assert embedded.grad[0, :3].abs().sum() > 0


@pytest.mark.parametrize("kv_heads", [None, 1])
def test_kv_cached_forward_equals_full_recompute(kv_heads):
    config = ModelConfig(n_layer=2, d_model=32, n_head=4, n_kv_head=kv_heads, vocab_size=31)
    trunk = Trunk(config).eval()
    tokens = torch.randint(0, 31, (3, 12))
    with torch.no_grad():
        full = trunk.logits(trunk(tokens))
        cache = trunk.new_cache(3, 12)
        # a prefill, a multi-token chunk after a cached prefix, then single tokens
        parts = [trunk(tokens[:, :5], cache), trunk(tokens[:, 5:9], cache)]
        parts += [trunk(tokens[:, i: i + 1], cache) for i in range(9, 12)]
        cached = trunk.logits(torch.cat(parts, dim=1))
    assert cache.length == 12
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-5)


def test_cache_crop_rolls_back():
    cache = KVCache(n_layer=1, batch=1, n_kv_head=1, head_dim=2, max_len=4)
    k = torch.arange(6.0).view(1, 1, 3, 2)
    cache.write(0, k, k)
    cache.length = 3
    cache.crop(1)
    keys, _ = cache.write(0, torch.full((1, 1, 1, 2), -1.0), torch.zeros(1, 1, 1, 2))
    assert keys.tolist() == [[[[0.0, 1.0], [-1.0, -1.0]]]]
    with pytest.raises(ValueError, match="holds 4 positions; 5"):
        cache.write(0, torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2))


def test_tied_and_untied_unembedding(tiny_config):
    tied = Trunk(tiny_config)
    assert tied.unembed.weight is tied.embed.weight
    untied = Trunk(tiny_config.replace(tie_embeddings=False))
    assert untied.unembed.weight is not untied.embed.weight


def test_logits_are_final_norm_then_unembedding(tiny_config):
    trunk = Trunk(tiny_config)
    hidden = torch.randn(2, 5, tiny_config.d_model)
    rms = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + tiny_config.norm_eps)
    expected = (rms * trunk.final_norm.weight) @ trunk.embed.weight.T
    torch.testing.assert_close(trunk.logits(hidden), expected)


def test_make_block_builds_a_fresh_block_of_the_same_kind(tiny_config):
    trunk = Trunk(tiny_config)
    block = trunk.make_block()
    assert type(block) is type(trunk.blocks[0])
    shapes = [p.shape for p in block.parameters()]
    assert shapes == [p.shape for p in trunk.blocks[0].parameters()]
    assert all(p is not q for p, q in zip(block.parameters(), trunk.blocks[0].parameters()))
    x = torch.randn(2, 7, tiny_config.d_model)
    assert block(x, trunk.rope(0, 7)).shape == x.shape


def test_rope_matches_the_rotation_formula(tiny_config):
    trunk = Trunk(tiny_config)
    cos, sin, mask, at = trunk.rope(3, 2)
    assert mask is None and at is None
    hd = tiny_config.head_dim
    inv_freq = 1.0 / tiny_config.rope_theta ** (torch.arange(0, hd, 2).float() / hd)
    angles = torch.tensor([3.0, 4.0])[:, None] * inv_freq
    torch.testing.assert_close(cos, torch.cat([angles.cos()] * 2, dim=-1))
    torch.testing.assert_close(sin, torch.cat([angles.sin()] * 2, dim=-1))
    assert trunk.rope(1000, 5)[0].shape == (5, hd)  # the table grows on demand


def test_document_mask_is_causal_within_each_document():
    from suite.model import document_mask

    tokens = torch.tensor([[5, 7, 2, 9, 4], [2, 6, 6, 2, 8]])  # 2 ends each document
    expected = torch.tensor([[[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]],
                             [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 1]]],
                            dtype=torch.bool)
    assert torch.equal(document_mask(tokens, 2), expected)


@pytest.mark.parametrize("objective,options", [("ntp", {}), ("parallel_mtp", {"n": 3}), ("sequential_mtp", {"depth": 2})])
def test_within_documents_each_document_of_a_row_is_read_as_if_alone(tiny_config, objective, options):
    """A row packing [a b SEP] and [c d e]: under `within_documents` the trunk's (and every head's) output at the
    second document's positions equals its output on that document alone (RoPE is relative), and the first's
    equals the first alone; without it the second document reads the first."""
    import objectives
    from suite.checkpoints import attach

    trunk = Trunk(tiny_config).eval()
    head = objectives.build(objective, **options)
    attach(head, trunk)
    first, second = torch.tensor([[5, 7, 2]]), torch.tensor([[9, 4, 11]])
    row = torch.cat([first, second], dim=1)
    with torch.no_grad():
        alone = [head.head_logits(trunk, first), head.head_logits(trunk, second)]
        crossing = head.head_logits(trunk, row)
        with trunk.within_documents(row, separator=2):
            within = head.head_logits(trunk, row)
        assert trunk.rope(0, 6).mask is None  # the block ends it
    heads = within.shape[2]
    assert heads == (1 if objective == "ntp" else 3)
    for k in range(heads):  # a head's last positions read tokens that lie past the row, which differ alone
        first_valid, second_valid = 3 - k, 3 - k
        torch.testing.assert_close(within[:, :first_valid, k], alone[0][:, :first_valid, k], rtol=0, atol=1e-5)
        torch.testing.assert_close(within[:, 3:3 + second_valid, k], alone[1][:, :second_valid, k], rtol=0,
                                   atol=1e-5)
    assert not torch.allclose(crossing[:, 3:, 0], alone[1][:, :, 0], atol=1e-3)


def test_a_trunk_first_read_in_inference_mode_still_trains(tiny_config):
    """Validation (Lightning's inference mode) may build the rotary table first; a pass with gradients afterwards
    (training, or each head's gradient at validation) must not read that inference tensor."""
    trunk = Trunk(tiny_config)
    tokens = torch.randint(0, 23, (2, 7))
    with torch.inference_mode():
        expected = trunk(tokens)
    hidden = trunk(tokens)
    hidden.sum().backward()
    torch.testing.assert_close(hidden.detach(), expected)
    assert trunk.blocks[0].attn.qkv.weight.grad is not None
