"""The multi-token objectives: hand-written targets, exactness at n = 1, no leakage, the headwise path."""

import math

import pytest
import torch
import torch.nn.functional as F

import objectives
from objectives import IGNORE, NTP, CausalMTP, FSPBoW, FSPRevLM, ParallelMTP, SequentialMTP
from suite.errors import UsageError
from suite.model import Trunk
from suite.sizes import ModelConfig, count_parameters
from suite.checkpoints import attach

X = IGNORE
TOKENS = torch.tensor([[5, 3, 8, 1, 9, 2]])
MASK = torch.tensor([[False, True, True, False, True, True]])  # 5 and 1 are not targets


def build(objective, config, dtype=torch.float32, seed=1):
    torch.manual_seed(seed)
    trunk = Trunk(config)
    attach(objective, trunk)
    return trunk.to(dtype), objective.to(dtype)


def loss_and_grads(objective, config, tokens, mask=None, dtype=torch.float32):
    trunk, objective = build(objective, config, dtype)
    loss, metrics = objective.loss(trunk, objective.hidden(trunk, tokens, mask), tokens, mask)
    loss.backward()
    grads = {f"trunk.{n}": p.grad for n, p in trunk.named_parameters()}
    grads.update({f"objective.{n}": p.grad for n, p in objective.named_parameters() if p.requires_grad})
    return loss, grads, metrics


# --- targets, written out by hand for the 1x6 sequence [5, 3, 8, 1, 9, 2] ---------------------------------------

def test_parallel_and_causal_targets_by_hand():
    for cls in (ParallelMTP, CausalMTP):
        assert [t.tolist() for t in cls(n=3).targets(TOKENS)] == [
            [[3, 8, 1, 9, 2, X]], [[8, 1, 9, 2, X, X]], [[1, 9, 2, X, X, X]]]
        assert [t.tolist() for t in cls(n=3).targets(TOKENS, MASK)] == [
            [[3, 8, X, 9, 2, X]], [[8, X, 9, 2, X, X]], [[X, 9, 2, X, X, X]]]


def test_sequential_inputs_and_targets_by_hand():
    objective = SequentialMTP(depth=2)
    assert [t.tolist() for t in objective.module_inputs(TOKENS)] == [[[3, 8, 1, 9, 2, 0]], [[8, 1, 9, 2, 0, 0]]]
    # next-token head, then module 1 (x_{t+2}) and module 2 (x_{t+3}); the last k+1 positions have no target
    assert [t.tolist() for t in objective.targets(TOKENS, MASK)] == [
        [[3, 8, X, 9, 2, X]], [[8, X, 9, 2, X, X]], [[X, 9, 2, X, X, X]]]


def test_bag_of_words_window_by_hand():
    window, valid = FSPBoW(tau=3).bag(TOKENS)  # x_{t+2}, x_{t+3}, sorted, IGNORE past the end
    assert window.tolist() == [[[1, 8], [1, 9], [2, 9], [X, 2], [X, X], [X, X]]]
    assert valid.tolist() == [[True, True, True, True, False, False]]
    window, valid = FSPBoW(tau=3).bag(TOKENS, MASK)  # 1 is not a target
    assert window.tolist() == [[[X, 8], [X, 9], [2, 9], [X, 2], [X, X], [X, X]]]
    repeats = torch.tensor([[4, 4, 7, 7, 7, 4]])
    window, _ = FSPBoW(tau=4).bag(repeats)  # a bag, not a count: each token once
    assert window.tolist() == [[[7, X, X], [4, 7, X], [X, 4, 7], [X, X, 4], [X, X, X], [X, X, X]]]


def test_bag_of_words_weights_by_hand():
    tokens = torch.tensor([[1, 2, 2, 3], [1, 1, 4, 4]])
    mask = torch.tensor([[True, True, True, True], [True, False, True, True]])
    weights = FSPBoW(weighting="tfidf").token_weights(tokens, mask, vocab_size=6)
    # df of 0..5 over the two sequences: 0, 2, 1, 1, 1, 0; tokens 0 and 5 are never a target and weigh nothing
    idf = [0.0, math.log(3 / 3) + 1, math.log(3 / 2) + 1, math.log(3 / 2) + 1, math.log(3 / 2) + 1, 0.0]
    assert weights.tolist() == pytest.approx([w / sum(idf) for w in idf])
    assert FSPBoW(weighting="none").token_weights(tokens, mask, 6).tolist() == [0.0, 0.25, 0.25, 0.25, 0.25, 0.0]


def test_bag_of_words_loss_equals_the_dense_formula():
    objective = FSPBoW(tau=3)
    window, valid = objective.bag(TOKENS, MASK)
    weights = torch.rand(10) + 0.5
    logits = torch.randn(1, 6, 10)
    loss, _ = objective.bow_loss(logits, torch.eye(10), window, valid, weights)  # identity unembedding: x = logits
    expected, positions = 0.0, 0
    for t in range(6):
        bag = {TOKENS[0, j].item() for j in range(t + 2, min(t + 4, 6)) if MASK[0, j]}
        if not bag:
            continue
        positions += 1
        for v in range(10):
            p = torch.sigmoid(logits[0, t, v]).item()
            a = 1.0 if v in bag else 0.0
            expected -= weights[v].item() * (a * math.log(p) + (1 - a) * math.log(1 - p))
    assert loss.item() == pytest.approx(expected / positions, rel=1e-5)


def test_bag_of_words_gradient_equals_autograd_of_the_dense_formula():
    objective = FSPBoW(tau=3)
    window, valid = objective.bag(TOKENS, MASK)
    weights = torch.rand(10, dtype=torch.float64) + 0.5
    x = torch.randn(1, 6, 4, dtype=torch.float64, requires_grad=True)
    unembed = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    loss, _ = objective.bow_loss(x, unembed, window, valid, weights)
    loss.backward()
    fused = x.grad, unembed.grad
    x.grad = unembed.grad = None
    multi_hot = torch.zeros(1, 6, 10, dtype=torch.float64)
    multi_hot.scatter_(2, window.clamp(min=0), (window >= 0).double())
    dense = F.binary_cross_entropy_with_logits(x @ unembed.T, multi_hot, weight=weights, reduction="none").sum(-1)
    reference = (dense * valid).sum() / valid.sum()
    reference.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused[0], x.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused[1], unembed.grad, rtol=1e-12, atol=1e-12)


def test_reverse_lm_targets_are_its_state_after_the_reversed_suffix(tiny_config, reverse_lm):
    trunk, objective = build(FSPRevLM(str(reverse_lm)), tiny_config)
    tokens = torch.randint(0, 23, (2, 9))
    targets, valid = objective.summaries(tokens)
    reverse = objective.reverse
    for t in range(9 - 2):
        suffix = tokens[:, t + 2:].flip(1)  # x_{T-1} .. x_{t+2}, read right to left
        with torch.no_grad():
            state = reverse.final_norm(reverse(suffix))[:, -1]
        torch.testing.assert_close(targets[:, t], state, rtol=1e-5, atol=1e-5)
    assert valid.tolist() == [[True] * 7 + [False] * 2] * 2
    _, valid = objective.summaries(TOKENS, MASK)  # a position counts when its next token is a target
    assert valid.tolist() == [[True, True, False, True, False, False]]


# --- n = 1 (or lambda = 0) is next-token prediction, exactly ---------------------------------------------------

EQUIVALENT_TO_NTP = [
    ("parallel n=1", lambda path: ParallelMTP(n=1)),
    ("parallel n=1 mean", lambda path: ParallelMTP(n=1, loss_reduction="mean")),
    ("parallel siblings n=1", lambda path: ParallelMTP(n=1, layout="siblings")),
    ("parallel stacked n=1", lambda path: ParallelMTP(n=1, layout="stacked")),
    ("parallel linear off block 1 n=1", lambda path: ParallelMTP(n=1, head_layers=0, branch_layer=1)),
    ("causal n=1", lambda path: CausalMTP(n=1)),
    ("sequential depth=0", lambda path: SequentialMTP(depth=0)),
    ("sequential lambda=0", lambda path: SequentialMTP(depth=2, loss_weight=0.0)),
    ("fsp_bow weight=0", lambda path: FSPBoW(tau=4, loss_weight=0.0)),
    ("fsp_revlm weight=0", lambda path: FSPRevLM(str(path), loss_weight=0.0)),
]


@pytest.mark.parametrize("label, make", EQUIVALENT_TO_NTP, ids=[label for label, _ in EQUIVALENT_TO_NTP])
def test_degenerate_settings_give_ntp_loss_and_gradients_exactly(label, make, tiny_config, reverse_lm):
    tokens = torch.randint(0, 23, (3, 10))
    mask = torch.rand(3, 10) > 0.3
    ntp_loss, ntp_grads, _ = loss_and_grads(NTP(), tiny_config, tokens, mask)
    loss, grads, _ = loss_and_grads(make(reverse_lm), tiny_config, tokens, mask)
    assert torch.equal(loss, ntp_loss)
    for name, grad in ntp_grads.items():
        assert torch.equal(grads[name], grad), name
    for name, grad in grads.items():  # the extra heads learn nothing from a zero weight
        if name not in ntp_grads:
            assert grad is None or not grad.any(), name


# --- the headwise (memory-efficient) path computes the same gradients as the plain graph -----------------------

ALL = [
    ("ntp", lambda path, headwise: NTP()),
    ("parallel", lambda path, headwise: ParallelMTP(n=3, head_weights=[1.0, 0.5, 0.25], layout="stacked",
                                                    headwise=headwise)),
    ("parallel 2 layers", lambda path, headwise: ParallelMTP(n=2, head_layers=2, layout="stacked", headwise=headwise)),
    ("parallel linear off block 1", lambda path, headwise: ParallelMTP(n=3, head_layers=0, branch_layer=1,
                                                                       headwise=headwise)),
    ("parallel off the embeddings", lambda path, headwise: ParallelMTP(n=2, branch_layer=0, headwise=headwise)),
    ("parallel siblings", lambda path, headwise: ParallelMTP(n=3, layout="siblings", headwise=headwise)),
    ("parallel siblings 2 layers", lambda path, headwise: ParallelMTP(n=2, head_layers=2, layout="siblings",
                                                                      headwise=headwise)),
    ("causal", lambda path, headwise: CausalMTP(n=3, headwise=headwise)),
    ("causal siblings", lambda path, headwise: CausalMTP(n=3, layout="siblings", headwise=headwise)),
    ("causal linear", lambda path, headwise: CausalMTP(n=3, head_layers=0, headwise=headwise)),
    ("sequential", lambda path, headwise: SequentialMTP(depth=2, headwise=headwise)),
    ("fsp_bow", lambda path, headwise: FSPBoW(tau=4, headwise=headwise)),
    ("fsp_revlm", lambda path, headwise: FSPRevLM(str(path), headwise=headwise)),
]


@pytest.mark.parametrize("label, make", ALL, ids=[label for label, _ in ALL])
def test_headwise_gradients_equal_the_naive_graph_in_float64(label, make, tiny_config, reverse_lm):
    tokens = torch.randint(0, 23, (3, 10))
    mask = torch.rand(3, 10) > 0.2
    loss, grads, metrics = loss_and_grads(make(reverse_lm, True), tiny_config, tokens, mask, torch.float64)
    naive_loss, naive_grads, naive_metrics = loss_and_grads(make(reverse_lm, False), tiny_config, tokens, mask,
                                                            torch.float64)
    torch.testing.assert_close(loss, naive_loss, rtol=1e-12, atol=1e-12)
    assert set(metrics) == set(naive_metrics)
    assert grads.keys() == naive_grads.keys()
    for name in grads:
        assert (grads[name] is None) == (naive_grads[name] is None), name
        if grads[name] is not None:
            torch.testing.assert_close(grads[name], naive_grads[name], rtol=1e-10, atol=1e-12, msg=name)


def test_parallel_total_is_the_weighted_sum_of_head_losses(tiny_config):
    tokens = torch.randint(0, 23, (2, 8))
    for reduction, scale in (("sum", 1.0), ("mean", 1 / 3)):
        trunk, objective = build(ParallelMTP(n=3, loss_reduction=reduction), tiny_config)
        loss, metrics = objective.loss(trunk, objective.hidden(trunk, tokens), tokens)
        heads = sum(metrics[f"loss/head_{k}"] for k in (1, 2, 3))
        torch.testing.assert_close(loss, scale * heads)


def test_sequential_total_is_ntp_plus_lambda_over_depth_times_module_losses(tiny_config):
    tokens = torch.randint(0, 23, (2, 8))
    trunk, objective = build(SequentialMTP(depth=2, loss_weight=0.3), tiny_config)
    loss, metrics = objective.loss(trunk, trunk(tokens), tokens)
    expected = metrics["loss/head_1"] + 0.3 / 2 * (metrics["loss/head_2"] + metrics["loss/head_3"])
    torch.testing.assert_close(loss, expected)


def test_sequential_loss_weight_schedule():
    objective = SequentialMTP(loss_weight_schedule={0.0: 0.3, 0.675: 0.1})
    for progress, weight in ((0.0, 0.3), (0.5, 0.3), (0.675, 0.1), (0.99, 0.1)):
        objective.progress = progress
        assert objective.current_loss_weight == weight


# --- no leakage, by perturbation ---------------------------------------------------------------------------------

def perturb_after(tokens, t, vocab):
    changed = tokens.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 7) % vocab
    return changed


DRAFTERS = [("ntp", NTP, 1), ("parallel", lambda: ParallelMTP(n=3, layout="stacked"), 3),
            ("causal", lambda: CausalMTP(n=4), 4), ("sequential", lambda: SequentialMTP(depth=2), 3),
            ("parallel siblings", lambda: ParallelMTP(n=3, layout="siblings"), 3),
            ("parallel linear off block 1", lambda: ParallelMTP(n=3, head_layers=0, branch_layer=1), 3),
            ("causal off the embeddings", lambda: CausalMTP(n=3, branch_layer=0), 3)]


@pytest.mark.parametrize("label, make, n", DRAFTERS, ids=[d[0] for d in DRAFTERS])
def test_drafts_at_t_read_nothing_after_t(label, make, n, tiny_config):
    trunk, objective = build(make(), tiny_config)
    tokens = torch.randint(0, 23, (2, 10))
    with torch.no_grad():
        drafts = objective.draft_logits(trunk, tokens)
        assert drafts.shape == (2, 10, n, 23)
        for t in (0, 4, 8):
            changed = objective.draft_logits(trunk, perturb_after(tokens, t, 23))
            torch.testing.assert_close(changed[:, : t + 1], drafts[:, : t + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(changed[:, t + 1:], drafts[:, t + 1:])
    torch.testing.assert_close(drafts[:, :, 0], trunk.logits(trunk(tokens)).detach())  # draft 1 is the NTP head


def test_sequential_module_k_at_t_reads_up_to_t_plus_k_in_training(tiny_config):
    trunk, objective = build(SequentialMTP(depth=2), tiny_config)
    tokens = torch.randint(0, 23, (2, 12))
    with torch.no_grad():
        logits = objective.module_logits(trunk, tokens)
        for k, module in ((1, logits[0]), (2, logits[1])):
            for t in (2, 6):
                after = objective.module_logits(trunk, perturb_after(tokens, t + k, 23))[k - 1]
                torch.testing.assert_close(after[:, : t + 1], module[:, : t + 1], rtol=0, atol=1e-6)
                at = objective.module_logits(trunk, perturb_after(tokens, t + k - 1, 23))[k - 1]
                assert not torch.allclose(at[:, t], module[:, t])  # and it does read x_{t+k}


def test_summary_heads_at_t_read_nothing_after_t(tiny_config, reverse_lm):
    tokens = torch.randint(0, 23, (2, 10))
    for objective, read in ((FSPBoW(tau=4), "summary_logits"), (FSPRevLM(str(reverse_lm)), "summary")):
        trunk, objective = build(objective, tiny_config)
        with torch.no_grad():
            out = getattr(objective, read)(trunk, tokens)
            for t in (0, 5):
                changed = getattr(objective, read)(trunk, perturb_after(tokens, t, 23))
                torch.testing.assert_close(changed[:, : t + 1], out[:, : t + 1], rtol=0, atol=1e-6)
                assert not torch.allclose(changed[:, t + 1:], out[:, t + 1:])


# --- parameters, specs, bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["stacked", "siblings"])
def test_match_params_removes_trunk_blocks_to_match_ntp(tiny_config, layout):
    config = tiny_config.replace(n_layer=4)
    ntp_trunk, _ = build(NTP(), config)
    trunk, objective = build(ParallelMTP(n=3, match_params=True, layout=layout), config)
    assert len(trunk.blocks) == 2
    assert count_parameters(trunk, objective)["total"] == count_parameters(ntp_trunk)["total"]
    # siblings: one shared block, then the next-token head's (the trunk's last) beside heads 2 and 3
    assert objective.branch_depth(trunk) == (1 if layout == "siblings" else 2)
    _, added = build(ParallelMTP(n=3), config)
    assert count_parameters(Trunk(config), added)["objective"] == 2 * count_parameters(Trunk(config))["trunk"] // 4


def test_siblings_heads_branch_off_below_the_trunks_last_block(tiny_config):
    trunk, objective = build(ParallelMTP(n=3, layout="siblings"), tiny_config)
    tokens = torch.randint(0, 23, (2, 9))
    with torch.no_grad():
        drafts = objective.draft_logits(trunk, tokens)
        below_last = trunk(tokens, depth=1)  # the trunk's first block only: where heads 2 and 3 read from
        for k in (2, 3):
            state = below_last
            for block in objective.heads[k - 2]:
                state = block(state, trunk.rope(0, 9))
            torch.testing.assert_close(drafts[:, :, k - 1], trunk.logits(state))
        torch.testing.assert_close(drafts[:, :, 0], trunk.logits(trunk(tokens)))  # head 1: the whole trunk
    stacked_trunk, stacked = build(ParallelMTP(n=3, layout="stacked"), tiny_config)
    assert count_parameters(trunk, objective) == count_parameters(stacked_trunk, stacked)


def test_siblings_train_the_next_token_heads_blocks_from_every_head(tiny_config):
    """The trunk's last block is head 1's own: heads 2..n give it no gradient, the shared block below gets theirs."""
    tokens = torch.randint(0, 23, (2, 9))
    trunk, objective = build(ParallelMTP(n=2, head_weights=[0.0, 1.0], layout="siblings"), tiny_config)
    objective.loss(trunk, objective.hidden(trunk, tokens), tokens)[0].backward()
    assert all(p.grad is None or not p.grad.any() for p in trunk.blocks[1].parameters())
    assert all(p.grad is not None and p.grad.any() for p in trunk.blocks[0].parameters())


def test_layouts_are_checked():
    with pytest.raises(UsageError, match="unknown causal_mtp layout 'beside'; known: siblings, stacked"):
        CausalMTP(n=2, layout="beside")
    with pytest.raises(UsageError, match="unknown parallel_mtp layout 'stacke'; known: siblings, stacked; did you "
                                         "mean 'stacked'"):
        ParallelMTP(layout="stacke")
    with pytest.raises(UsageError, match="needs the trunk's last head_layers=3 blocks as the next-token head, and the "
                                         "trunk has 2; allowed: head_layers <= 2"):
        ParallelMTP(n=2, head_layers=3, layout="siblings").attach(Trunk(ModelConfig(n_layer=2, vocab_size=23)))
    with pytest.raises(UsageError, match=r"parallel_mtp branch_layer=3 is past the trunk's 2 blocks; allowed: 0 \.\. 2$"):
        ParallelMTP(n=2, branch_layer=3).attach(Trunk(ModelConfig(n_layer=2, vocab_size=23)))
    with pytest.raises(UsageError, match=r"parallel_mtp branch_layer=-1 is out of range; allowed: >= 0"):
        ParallelMTP(n=2, branch_layer=-1)
    with pytest.raises(UsageError, match=r"parallel_mtp head_layers=-1 is out of range; allowed: >= 0"):
        ParallelMTP(n=2, head_layers=-1)
    with pytest.raises(UsageError, match="match_params removes a trunk block per extra head, and head_layers=0"):
        ParallelMTP(n=2, head_layers=0, match_params=True)


def test_defaults_are_the_papers_layouts(tiny_config):
    """Parallel MTP is Gloeckle et al.'s siblings unless told otherwise; causal MTP's chain starts at the
    next-token head (their appendix), as do self-distilled heads on a pretrained trunk (Medusa's)."""
    config = tiny_config.replace(n_layer=3)
    for objective, depth in ((ParallelMTP(n=2), 2), (ParallelMTP(n=2, head_layers=2), 1), (CausalMTP(n=2), 3),
                             (objectives.build("self_distill_mtp", n=2), 3), (ParallelMTP(n=2, layout="stacked"), 3),
                             (ParallelMTP(n=2, head_layers=0), 3), (ParallelMTP(n=2, branch_layer=0), 0)):
        trunk, objective = build(objective, config)
        assert objective.branch_depth(trunk) == depth, objective


@pytest.mark.parametrize("branch", [0, 1, 2])
@pytest.mark.parametrize("head_layers", [0, 1, 2])
def test_extra_heads_read_the_trunk_after_branch_layer_blocks(tiny_config, branch, head_layers):
    """Head k's drafts are its own blocks (or linear map) over the trunk's state after `branch_layer` blocks,
    computed here block by block from the trunk's own modules; head 1 is always the whole trunk."""
    trunk, objective = build(ParallelMTP(n=3, branch_layer=branch, head_layers=head_layers), tiny_config)
    tokens = torch.randint(0, 23, (2, 9))
    with torch.no_grad():
        for head in objective.heads:  # a linear head starts as the identity: move it off, so it is seen to apply
            for module in head:
                if head_layers == 0:
                    module.proj.weight.add_(0.1 * torch.randn_like(module.proj.weight))
        drafts = objective.draft_logits(trunk, tokens)
        x, rope = trunk.embed(tokens), trunk.rope(0, 9)
        for block in trunk.blocks[:branch]:
            x = block(x, rope)
        for k in (2, 3):
            state = x
            for module in objective.heads[k - 2]:
                state = state @ module.proj.weight.T if head_layers == 0 else module(state, rope)
            torch.testing.assert_close(drafts[:, :, k - 1], trunk.unembed(trunk.final_norm(state)))
        torch.testing.assert_close(drafts[:, :, 0], trunk.logits(trunk(tokens)))
    own = sum(p.numel() for p in objective.parameters())
    per_head = tiny_config.d_model ** 2 if head_layers == 0 else head_layers * sum(
        p.numel() for p in trunk.blocks[0].parameters())
    assert own == 2 * per_head


def test_a_linear_head_starts_as_the_branch_states_own_readout(tiny_config):
    """head_layers = 0 at n = 2 starts as the parameter-free readout: head 2's logits at t are the shared norm and
    unembedding of the state after branch_layer blocks."""
    trunk, objective = build(ParallelMTP(n=2, head_layers=0, branch_layer=1), tiny_config)
    tokens = torch.randint(0, 23, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(objective.draft_logits(trunk, tokens)[:, :, 1], trunk.logits(trunk(tokens, depth=1)),
                                   rtol=0, atol=0)


def test_causal_chain_branches_where_told(tiny_config):
    """Causal MTP with branch_layer b: head 2 reads the trunk after b blocks, head 3 reads head 2's state."""
    trunk, objective = build(CausalMTP(n=3, branch_layer=1), tiny_config)
    tokens = torch.randint(0, 23, (2, 8))
    with torch.no_grad():
        drafts = objective.draft_logits(trunk, tokens)
        rope = trunk.rope(0, 8)
        head_2 = objective.heads[0][0](trunk(tokens, depth=1), rope)
        head_3 = objective.heads[1][0](head_2, rope)
        torch.testing.assert_close(drafts[:, :, 1], trunk.logits(head_2))
        torch.testing.assert_close(drafts[:, :, 2], trunk.logits(head_3))


def test_reverse_lm_is_frozen_and_counted_apart(tiny_config, reverse_lm):
    trunk, objective = build(FSPRevLM(str(reverse_lm)), tiny_config)
    counts = count_parameters(trunk, objective)
    assert counts["frozen"] == sum(p.numel() for p in objective.reverse.parameters()) > 0
    assert not any(p.requires_grad for p in objective.reverse.parameters())
    optimizer_sees = {id(p) for p in [*trunk.parameters(), *objective.parameters()] if p.requires_grad}
    assert not optimizer_sees & {id(p) for p in objective.reverse.parameters()}


@pytest.mark.parametrize("name, options", [
    ("parallel_mtp", {"n": 4, "head_layers": 2, "loss_reduction": "mean"}),
    ("causal_mtp", {"n": 2}), ("sequential_mtp", {"depth": 2, "loss_weight_schedule": {0.0: 0.3, 0.5: 0.1}}),
    ("fsp_bow", {"tau": 16, "weighting": "none"}),
])
def test_spec_round_trips(name, options):
    objective = objectives.build(name, **options)
    rebuilt = objectives.from_spec(objective.spec())
    assert type(rebuilt) is type(objective) and rebuilt.spec() == objective.spec()


@pytest.mark.parametrize("make, message", [
    (lambda: objectives.build("parallel_mtp", n=0), "parallel_mtp n=0 is out of range; allowed: >= 1"),
    (lambda: objectives.build("causal_mtp", n=-1), "causal_mtp n=-1 is out of range; allowed: >= 1"),
    (lambda: objectives.build("sequential_mtp", depth=-1), "sequential_mtp depth=-1 is out of range"),
    (lambda: objectives.build("fsp_bow", tau=1), "fsp_bow tau=1 is out of range; allowed: >= 2"),
    (lambda: objectives.build("fsp_bow", weighting="bm25"), "weighting"),
    (lambda: objectives.build("parallel_mtp", n=3, head_weights=[1, 1]), "head_weights has 2 entries"),
    (lambda: objectives.build("sequential_mtp", loss_weight_schedule={0.5: 0.1}), "must start at fraction 0.0"),
    (lambda: attach(objectives.build("fsp_revlm", reverse_lm="nowhere.ckpt"), None),
     "fsp_revlm reverse_lm 'nowhere.ckpt' does not exist"),
])
def test_bad_options_are_one_line_usage_errors(make, message):
    with pytest.raises(UsageError, match=message) as err:
        make()
    assert "\n" not in str(err.value)


def test_horizon_must_fit_the_sequence():
    with pytest.raises(UsageError, match="parallel_mtp predicts 26 tokens ahead, too many for sequences of 26"):
        ParallelMTP(n=26).check_sequence_length(26)
    ParallelMTP(n=25).check_sequence_length(26)
    with pytest.raises(UsageError, match="sequential_mtp predicts 4 tokens ahead"):
        SequentialMTP(depth=3).check_sequence_length(4)


def test_reverse_lm_of_another_vocabulary_or_direction_is_refused(tiny_config, reverse_lm, tmp_path):
    with pytest.raises(UsageError, match="has vocabulary size 23; allowed: the model's own, 30"):
        attach(FSPRevLM(str(reverse_lm)), Trunk(tiny_config.replace(vocab_size=30)))
    checkpoint = torch.load(reverse_lm, weights_only=False)
    checkpoint["datamodule_hyper_parameters"]["reverse"] = False
    forward = tmp_path / "forward.ckpt"
    torch.save(checkpoint, forward)
    refused = r"not trained with --data.reverse=true \(its data has reverse=False\); allowed: a checkpoint of"
    with pytest.raises(UsageError, match=refused):
        attach(FSPRevLM(str(forward)), Trunk(tiny_config))
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(reverse_lm.read_bytes()[:1000])
    with pytest.raises(UsageError, match="cannot be read"):
        attach(FSPRevLM(str(broken)), Trunk(tiny_config))


def test_head_logits_are_each_heads_prediction_as_trained(tiny_config):
    """What `foresight probe` reads: the heads teacher-forced. Parallel heads read x_{<=t} only (their drafts);
    a sequential module reads the true next token, where its draft reads the next-token head's guess."""
    tokens = torch.randint(0, 23, (2, 9))
    with torch.no_grad():
        trunk, parallel = build(ParallelMTP(n=3, layout="siblings"), tiny_config)
        torch.testing.assert_close(parallel.head_logits(trunk, tokens), parallel.draft_logits(trunk, tokens))
        trunk, sequential = build(SequentialMTP(depth=2), tiny_config)
        heads = sequential.head_logits(trunk, tokens)
        assert heads.shape == (2, 9, 3, 23)
        torch.testing.assert_close(heads[:, :, 0], trunk.logits(trunk(tokens)))
        for k, module in enumerate(sequential.module_logits(trunk, tokens), start=1):
            torch.testing.assert_close(heads[:, :, k], module)
        trunk, _ = build(NTP(), tiny_config)
        torch.testing.assert_close(NTP().head_logits(trunk, tokens), NTP().draft_logits(trunk, tokens))
