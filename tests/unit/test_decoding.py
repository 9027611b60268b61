"""Decoding against greedy decoding done the slow way (no cache, the whole sequence every token): plain and
self-speculative, for every objective that drafts, untrained and briefly trained, batch 1 and 3, with and without an
EOS inside a draft. The verify-and-roll-back logic is also driven by scripted drafters whose drafts are always right,
always wrong or right at random, where the exact pass and acceptance counts are known; each drafter's KV caches are
checked against recomputing its heads over the whole sequence."""

import copy

import pytest
import torch

from objectives import NTP, CausalMTP, FSPBoW, ParallelMTP, SequentialMTP
from objectives.heads import run_blocks
from suite.checkpoints import Model
from suite.decoding import DecodeStats, Passes, StaticPasses, generate
from suite.errors import UsageError
from suite.model import Trunk
from suite.sizes import ModelConfig
from tests.conftest import naive_greedy

VOCAB = 13
CONFIG = ModelConfig(n_layer=2, d_model=32, n_head=4, vocab_size=VOCAB, init_std=0.3)
"""A wide init, so that even untrained greedy paths wander over the vocabulary instead of repeating one token."""

DRAFTING = {
    "ntp": NTP,
    "parallel n=2": lambda: ParallelMTP(n=2, layout="stacked"),
    "parallel n=4": lambda: ParallelMTP(n=4, layout="stacked"),
    "parallel n=3, 2-block heads": lambda: ParallelMTP(n=3, head_layers=2, layout="stacked"),
    "parallel n=3, linear heads off block 1": lambda: ParallelMTP(n=3, head_layers=0, branch_layer=1),
    "causal n=4": lambda: CausalMTP(n=4),
    "sequential n=2": lambda: SequentialMTP(depth=1),
    "sequential n=4": lambda: SequentialMTP(depth=3),
}


def build(make) -> Model:
    trunk = Trunk(CONFIG)
    objective = make()
    objective.attach(trunk)
    return Model(trunk.eval(), objective.eval())


def rule_batch(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Sequences x_{t+1} = x_t + s (mod VOCAB), s in {1, 2, 3} per sequence: predictable a few tokens ahead once
    two tokens have shown s, so trained heads draft well."""
    start = torch.randint(0, VOCAB, (batch, 1), generator=generator)
    step = torch.randint(1, 4, (batch, 1), generator=generator)
    return (start + step * torch.arange(length)) % VOCAB


def trained(make, steps: int = 60) -> Model:
    model = build(make)
    params = [*model.trunk.parameters(), *model.objective.parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-2)
    generator = torch.Generator().manual_seed(1)
    model.trunk.train(), model.objective.train()
    for _ in range(steps):
        tokens = rule_batch(32, 28, generator)
        loss, _ = model.objective.loss(model.trunk, model.objective.hidden(model.trunk, tokens), tokens)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.trunk.eval(), model.objective.eval()
    return model


_TRAINED: dict[str, Model] = {}


def trained_model(label: str) -> Model:
    if label not in _TRAINED:
        torch.manual_seed(0)
        _TRAINED[label] = trained(DRAFTING[label])
    return _TRAINED[label]


# --- speculative output is greedy output ---------------------------------------------------------------------------

@pytest.mark.parametrize("label", DRAFTING)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("graphs", [False, True])
def test_untrained_speculative_and_plain_decoding_equal_naive_greedy(label, batch, graphs):
    model = build(DRAFTING[label])
    prompts = torch.randint(0, VOCAB, (batch, 5))
    expected = naive_greedy(model.trunk, prompts, 17)
    plain, plain_stats = generate(model, prompts, 17, graphs=graphs)
    fast, stats = generate(model, prompts, 17, speculative=True, graphs=graphs)
    assert torch.equal(plain, expected) and torch.equal(fast, expected)
    assert plain_stats.trunk_passes == 17 and plain_stats.tokens_per_pass == 1.0
    assert stats.row_tokens == 17 * batch and stats.trunk_passes <= 17
    assert len(stats.drafted) == model.objective.n - 1


@pytest.mark.parametrize("label", DRAFTING)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("graphs", [False, True])
def test_trained_speculative_decoding_equals_greedy_and_drafts_hold(label, batch, graphs):
    model = trained_model(label)
    prompts = rule_batch(batch, 4, torch.Generator().manual_seed(batch))
    expected = naive_greedy(model.trunk, prompts, 20)
    assert torch.equal(expected, rule_batch(batch, 24, torch.Generator().manual_seed(batch))[:, 4:]), \
        "the trained model must have learned the rule for its drafts to be worth checking"
    fast, stats = generate(model, prompts, 20, speculative=True, graphs=graphs)
    assert torch.equal(fast, expected)
    n = model.objective.n
    # every head learned the rule: every draft holds, so each pass after the prompt's yields n tokens (the last
    # pass fewer where the 20 tokens run out)
    assert stats.acceptance == [1.0] * (n - 1)
    assert stats.trunk_passes == 1 + -(-19 // n)
    assert stats.tokens_per_pass == pytest.approx(20 / stats.trunk_passes)


@pytest.mark.parametrize("label", ["parallel n=4", "causal n=4", "sequential n=4"])
@pytest.mark.parametrize("graphs", [False, True])
def test_trained_speculative_decoding_stops_at_an_eos_inside_a_draft(label, graphs):
    model = trained_model(label)
    prompts = rule_batch(3, 4, torch.Generator().manual_seed(3))
    plain = naive_greedy(model.trunk, prompts, 20)
    # passes yield tokens 0 | 1-4 | 5-8 | ...: token 6 is the second draft of the third pass
    eos = int(plain[0, 6])
    assert eos not in plain[0, :6].tolist()
    expected = naive_greedy(model.trunk, prompts, 20, eos_id=eos)
    fast, stats = generate(model, prompts, 20, speculative=True, eos_id=eos, graphs=graphs)
    assert torch.equal(fast, expected)
    assert fast[0, 6:].tolist() == [eos] * 14
    assert stats.row_tokens == sum(int((row == eos).nonzero()[0]) + 1 if (row == eos).any() else 20
                                   for row in expected)


# --- static-shaped passes (CUDA graphs on a GPU) ---------------------------------------------------------------------

@pytest.mark.parametrize("label", ["parallel n=4", "parallel n=3, 2-block heads", "causal n=4", "sequential n=4"])
def test_static_passes_are_kept_across_calls_and_what_a_call_leaves_is_never_read(label):
    """Calls with a long prompt, then shorter ones, greedy and speculative alternating, reuse one set of static
    caches per way of decoding: the entries a longer call left past a shorter call's positions are masked out, so
    every call still gives the eager call's tokens and figures."""
    model = trained_model(label)
    model.trunk.__dict__.pop("_static_passes", None)  # what earlier tests' calls left
    generator = torch.Generator().manual_seed(7)
    for length, new in ((9, 30), (3, 12), (6, 20), (4, 3)):
        prompts = rule_batch(2, length, generator)
        prompts[1, -1] = (prompts[1, -1] + 5) % VOCAB  # a row off the rule: drafts get rejected, caches roll back
        for speculative in (False, True):
            eager, eager_stats = generate(model, prompts, new, speculative=speculative)
            static, static_stats = generate(model, prompts, new, speculative=speculative, graphs=True)
            assert torch.equal(static, eager) and torch.equal(eager, naive_greedy(model.trunk, prompts, new))
            assert static_stats.as_dict() == eager_stats.as_dict()
    kept = model.trunk._static_passes
    assert len(kept) == 2 and {key[3] for key in kept} == {False, True}  # one set per way, reused by each call
    assert all(passes.cache.max_len == 256 for passes in kept.values())


def test_reused_static_passes_draft_with_the_heads_weights_as_they_are_at_the_call():
    """Stacked heads draft from copies of the heads' weights (`objectives.stack`); a call that reuses them after the
    heads changed (a training step between evaluations, say) reads the new weights, as eager drafting does."""
    source = trained_model("parallel n=4")
    source.trunk.__dict__.pop("_static_passes", None)
    model = copy.deepcopy(source)
    prompts = rule_batch(2, 4, torch.Generator().manual_seed(5))
    _, first = generate(model, prompts, 16, speculative=True, graphs=True)
    assert first.acceptance == [1.0, 1.0, 1.0]
    with torch.no_grad():
        for parameter in model.objective.heads[1].parameters():  # head 3 unlearns the rule
            parameter.copy_(torch.randn_like(parameter))
    eager, eager_stats = generate(model, prompts, 16, speculative=True)
    static, static_stats = generate(model, prompts, 16, speculative=True, graphs=True)
    assert torch.equal(static, eager) and static_stats.as_dict() == eager_stats.as_dict()
    assert static_stats.acceptance[0] == 1.0 and static_stats.acceptance[1] < 1.0


def test_kept_sibling_heads_hold_no_activation_of_training_steps():
    """Sibling heads read the trunk's state below its last block through a hook, which stays while static passes
    are kept; a training step's activations are not recorded by it, and a decoding pass's are held until read."""
    model = build(lambda: ParallelMTP(n=3, layout="siblings"))
    prompts = torch.randint(0, VOCAB, (1, 5))
    expected = naive_greedy(model.trunk, prompts, 9)
    assert torch.equal(generate(model, prompts, 9, speculative=True, graphs=True)[0], expected)
    (passes,) = model.trunk._static_passes.values()
    shared = passes.in_pass.shared  # the BranchState the heads read through
    assert shared.handle is not None and shared.state is None  # read by the last pass
    model.trunk(prompts).sum().backward()  # a training step's forward
    assert shared.state is None
    with torch.no_grad():
        model.trunk(prompts)
    assert shared.state is not None and shared.state.shape == (1, 5, CONFIG.d_model)


def test_static_passes_of_another_dtype_are_other_passes():
    model = build(DRAFTING["parallel n=4"])
    prompts = torch.randint(0, VOCAB, (1, 5))
    generate(model, prompts, 9, speculative=True, graphs=True)
    model.trunk.double(), model.objective.double()
    assert torch.equal(generate(model, prompts, 9, speculative=True, graphs=True)[0],
                       naive_greedy(model.trunk, prompts, 9))
    assert sorted(str(key[5]) for key in model.trunk._static_passes) == ["torch.float32", "torch.float64"]


def test_static_passes_read_a_compressed_cache_as_the_eager_ones_do():
    from suite.quantize import KVQuant

    model = trained_model("parallel n=4")
    model.trunk.__dict__.pop("_static_passes", None)
    prompts = rule_batch(2, 5, torch.Generator().manual_seed(2))
    model.trunk.kv_quant = KVQuant.of(2, rotate=True)
    try:
        for speculative in (False, True):
            eager, _ = generate(model, prompts, 16, speculative=speculative)
            static, _ = generate(model, prompts, 16, speculative=speculative, graphs=True)
            assert torch.equal(static, eager)
        assert [key[6] for key in model.trunk._static_passes] == [model.trunk.kv_quant] * 2
    finally:
        model.trunk.kv_quant = None
        model.trunk.__dict__.pop("_static_passes", None)


IN_PASS = {label: DRAFTING[label] for label in ("parallel n=4", "parallel n=3, 2-block heads", "causal n=4")}
IN_PASS["parallel siblings n=3"] = lambda: ParallelMTP(n=3, layout="siblings")
IN_PASS["parallel linear heads off the embeddings n=3"] = lambda: ParallelMTP(n=3, head_layers=0, branch_layer=0)


@pytest.mark.parametrize("label", IN_PASS)
@torch.no_grad()
def test_a_static_pass_drafts_at_every_position_with_one_unembedding(label):
    """A static pass gives the trunk's logits and every head's draft at every position it reads, as recomputing the
    heads over the whole sequence does, from a single matmul with the unembedding."""
    model = build(IN_PASS[label])
    tokens = torch.randint(0, VOCAB, (2, 11))
    passes = StaticPasses(model.trunk, model.objective, 2, 16, drafting=True)
    calls = []
    hook = model.trunk.unembed.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    try:
        reads = [passes.run(tokens[:, :7]), passes.run(tokens[:, 7:])]
    finally:
        hook.remove()
    n = model.objective.n
    assert calls == [(2, 7, n, VOCAB), (2, 4, n, VOCAB)]
    reference = model.objective.draft_logits(model.trunk, tokens)  # [B, T, n, V], no cache
    read = {"logits": torch.cat([r.logits for r in reads], 1), "drafts": torch.cat([r.drafts for r in reads], 1)}
    torch.testing.assert_close(read["logits"], reference[:, :, 0], rtol=0, atol=1e-5)
    assert torch.equal(read["drafts"], reference[:, :, 1:].argmax(-1))
    assert torch.equal(torch.cat([r.greedy for r in reads], 1), reference[:, :, 0].argmax(-1))


@pytest.mark.parametrize("wrong", [0, 1, 2, None])
@torch.no_grad()
def test_a_pass_counts_the_drafts_that_hold_before_the_first_wrong_one(wrong):
    model = build(NTP)
    prompts = torch.randint(0, VOCAB, (1, 5))
    truth = naive_greedy(model.trunk, prompts, 5)  # the first token, three to draft, and the one after them
    drafts = truth[:, 1:4].clone()
    if wrong is not None:
        drafts[0, wrong] = (drafts[0, wrong] + 1) % VOCAB
        if wrong < 2:
            drafts[0, 2] = (drafts[0, 2] + 1) % VOCAB  # a later draft that is wrong too changes nothing
    passes = Passes(model.trunk, 1, 16)
    passes.run(prompts)
    read = passes.run(torch.cat([truth[:, :1], drafts], dim=1))
    held = 3 if wrong is None else wrong
    assert read.held.tolist() == [held]
    assert torch.equal(read.greedy[:, : held + 1], truth[:, 1: held + 2])  # greedy's tokens up to the first miss


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("label", ["parallel n=4", "causal n=4", "sequential n=4"])
def test_cuda_graphs_replay_greedy_output(label):
    model = trained_model(label)
    model.trunk.cuda(), model.objective.cuda()
    try:
        prompts = rule_batch(2, 5, torch.Generator().manual_seed(4)).cuda()
        for speculative in (False, True):
            eager, eager_stats = generate(model, prompts, 24, speculative=speculative)
            for _ in range(2):  # captured on the first call, replayed on the second
                graphed, stats = generate(model, prompts, 24, speculative=speculative, graphs=True)
                assert torch.equal(graphed, eager) and stats.as_dict() == eager_stats.as_dict()
        assert all(passes.graphs for passes in model.trunk._static_passes.values())
        if label.startswith("sequential"):  # its modules draft after the pass, in a graph of their own
            assert any(key[0] == "window" for passes in model.trunk._static_passes.values() for key in passes.graphs)
    finally:
        model.trunk.cpu(), model.objective.cpu()
        model.trunk.__dict__.pop("_static_passes", None)


# --- the verify-and-roll-back logic, with scripted drafts ------------------------------------------------------------

class Scripted:
    """An objective whose drafts are chosen by a script from the true greedy continuation: `truth` [B, L]
    (prompt and continuation), `right(row, position)` says whether the draft of that position is the true token."""

    name = "scripted"
    decoding = "autoregressive"

    def __init__(self, n: int, truth: torch.Tensor, right):
        self.n, self.truth, self.right = n, truth, right

    def drafter(self, trunk, batch, max_len):
        def draft(hidden, tokens):
            decided = tokens.shape[1] - 1
            rows = []
            for row in range(batch):
                positions = range(decided + 1, decided + self.n)
                rows.append([int(self.truth[row, p]) if self.right(row, p) else (int(self.truth[row, p]) + 1) % VOCAB
                             for p in positions])
            return torch.tensor(rows, dtype=torch.long).view(batch, self.n - 1)

        return draft


def scripted(n: int, prompts: torch.Tensor, new: int, right, eos_id=None, seed: int = 0):
    torch.manual_seed(seed)
    trunk = build(NTP).trunk
    truth = torch.cat([prompts, naive_greedy(trunk, prompts, new + n, eos_id)], dim=1)
    return Model(trunk, Scripted(n, truth, right)), truth[:, prompts.shape[1]: prompts.shape[1] + new]


def test_drafts_that_always_hold_give_n_tokens_a_pass():
    prompts = torch.randint(0, VOCAB, (2, 5))
    model, expected = scripted(4, prompts, 12, lambda row, p: True)
    out, stats = generate(model, prompts, 12, speculative=True)
    assert torch.equal(out, expected)
    # 1 token from the prompt's pass, then 4 + 4 + 3 (the last pass drafts only the 2 tokens still wanted)
    assert stats.trunk_passes == 4 and stats.row_passes == 8 and stats.row_tokens == 24
    assert stats.drafted == [6, 6, 4] and stats.accepted == [6, 6, 4] and stats.tokens_per_pass == 3.0


def test_drafts_that_never_hold_give_one_token_a_pass():
    prompts = torch.randint(0, VOCAB, (2, 5))
    model, expected = scripted(3, prompts, 9, lambda row, p: False)
    out, stats = generate(model, prompts, 9, speculative=True)
    assert torch.equal(out, expected)
    assert stats.trunk_passes == 9 and stats.tokens_per_pass == 1.0
    # passes after the prompt's start at 1..8 tokens made; draft j is checked while 9 - made - 1 > j
    assert stats.drafted == [14, 12] and stats.accepted == [0, 0]


def test_a_batch_keeps_the_drafts_that_hold_in_every_row():
    prompts = torch.randint(0, VOCAB, (2, 5))
    # row 0's drafts always hold; row 1's fail at every position divisible by 3
    model, expected = scripted(4, prompts, 15, lambda row, p: row == 0 or p % 3)
    out, stats = generate(model, prompts, 15, speculative=True)
    assert torch.equal(out, expected)
    assert stats.drafted[0] / 2 <= stats.accepted[0] < stats.drafted[0]  # row 0 kept every first draft, row 1 not
    assert stats.accepted[0] > stats.accepted[2]  # a later draft holds only if every earlier one does
    assert 1.0 < stats.tokens_per_pass < 4.0


@pytest.mark.parametrize("seed", range(5))
def test_random_drafts_roll_back_exactly(seed):
    generator = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, VOCAB, (3, 4), generator=generator)
    coins = torch.rand(3, 64, generator=generator) < 0.6
    model, expected = scripted(5, prompts, 25, lambda row, p: bool(coins[row, p]))
    out, stats = generate(model, prompts, 25, speculative=True)
    assert torch.equal(out, expected)
    assert stats.row_tokens == 75


def test_an_eos_inside_a_kept_draft_ends_the_row_there():
    for seed in range(50):  # prompts whose continuation has a first occurrence of a token at a drafted position
        prompts = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(seed))
        model, plain = scripted(4, prompts, 12, lambda row, p: True)
        # passes yield tokens 0 | 1-4 | 5-8 | 9-11: positions 4 and 8 are the token after a pass's drafts
        fresh = [i for i in (5, 6, 7, 9, 10) if int(plain[0, i]) not in plain[0, :i].tolist()]
        if fresh:
            break
    position = fresh[0]
    eos = int(plain[0, position])
    model, expected = scripted(4, prompts, 12, lambda row, p: True, eos_id=eos)
    out, stats = generate(model, prompts, 12, speculative=True, eos_id=eos)
    assert torch.equal(out, expected)
    assert out[0, position:].tolist() == [eos] * (12 - position)


def test_a_stop_function_ends_rows_between_kept_drafts():
    prompts = torch.randint(0, VOCAB, (2, 5))
    model, plain = scripted(4, prompts, 12, lambda row, p: True)
    out, stats = generate(model, prompts, 12, speculative=True, eos_id=VOCAB,
                          stop=lambda row, new: row == 1 and len(new) == 6)
    assert out[0].tolist() == plain[0].tolist()
    assert out[1].tolist() == plain[1, :6].tolist() + [VOCAB] * 6
    assert stats.row_tokens == 12 + 6


# --- drafters against full recompute ---------------------------------------------------------------------------------

def sequential_reference(objective: SequentialMTP, trunk, tokens: torch.Tensor) -> torch.Tensor:
    """The drafts `SequentialMTP.drafter` must give for `tokens` [B, C + 1], with no cache: module k over every
    position, reading the decided token x_{s+k} where there is one and this call's drafts after that."""
    decided = tokens.shape[1] - 1
    state, known, drafts = trunk(tokens[:, :decided]), tokens, []
    for k in range(1, objective.depth + 1):
        state = objective._step(trunk, k, known[:, k: decided + k])(None, state)
        drafts.append(trunk.logits(state[:, -1]).argmax(-1))
        known = torch.cat([known, drafts[-1][:, None]], dim=1)
    return torch.stack(drafts, dim=1)


def reference_drafts(model: Model, tokens: torch.Tensor) -> torch.Tensor:
    if isinstance(model.objective, SequentialMTP):
        return sequential_reference(model.objective, model.trunk, tokens)
    # parallel and causal MTP: heads 2..n at the last position the trunk read draft x_{C+1} .. x_{C+n-1}
    return model.objective.draft_logits(model.trunk, tokens[:, :-1])[:, -1, 1:].argmax(-1)


@pytest.mark.parametrize("label", [label for label in DRAFTING if label != "ntp"])
@pytest.mark.parametrize("chunks", [(1,) * 12, (3, 1, 4, 2, 2), (5, 7)])
@torch.no_grad()
def test_a_drafter_fed_in_chunks_drafts_what_full_recompute_drafts(label, chunks):
    model = build(DRAFTING[label])
    tokens = torch.randint(0, VOCAB, (2, 3 + sum(chunks) + 1))
    draft = model.objective.drafter(model.trunk, 2, tokens.shape[1])
    cache = model.trunk.new_cache(2, tokens.shape[1])
    read = 3
    hidden = model.trunk(tokens[:, :read], cache)
    for chunk in (*chunks, None):
        drafts = draft(hidden, tokens[:, : read + 1])
        assert drafts.shape == (2, model.objective.n - 1)
        assert torch.equal(drafts, reference_drafts(model, tokens[:, : read + 1])), (label, read)
        if chunk is None:
            break
        hidden = model.trunk(tokens[:, read: read + chunk], cache)
        read += chunk


@pytest.mark.parametrize("prompt", [1, 2, 6])
@torch.no_grad()
def test_sequential_modules_drafting_over_a_static_window_draft_what_full_recompute_drafts(prompt):
    """Static-shaped passes, then the sequential modules' window drafter after each, keeping 0 to n - 1 of the
    drafts each pass (the token after them drawn at random): after every pass the drafts are the full recompute's,
    though the window re-reads only the last n positions (after the first drafting, which reads the prompt)."""
    model = build(DRAFTING["sequential n=4"])
    generator = torch.Generator().manual_seed(prompt)
    tokens = torch.randint(0, VOCAB, (2, prompt + 1), generator=generator)  # the prompt and the token after it
    passes = StaticPasses(model.trunk, model.objective, 2, 40, drafting=True)
    assert passes.window is not None and passes.in_pass is None
    passes.run(tokens[:, :prompt])
    passes.decided(0, tokens)
    for kept in (0, 3, 1, 2, 0, 3, 3, 1):
        drafts = passes.draft()
        assert torch.equal(drafts, reference_drafts(model, tokens)), (prompt, tokens.shape[1])
        passes.run(torch.cat([tokens[:, -1:], drafts], dim=1))
        passes.keep(4, kept)
        new = torch.cat([drafts[:, :kept], torch.randint(0, VOCAB, (2, 1), generator=generator)], dim=1)
        tokens = torch.cat([tokens, new], dim=1)
        passes.decided(tokens.shape[1] - new.shape[1], new)
    assert passes.windows == 8 and passes.window_cursor.at.shape == (4,)  # one width after the first


@pytest.mark.parametrize("layers", [1, 2])
@torch.no_grad()
def test_kv_cached_head_blocks_equal_full_recompute(layers):
    trunk = Trunk(CONFIG)
    blocks = torch.nn.ModuleList(trunk.make_block() for _ in range(layers))
    x = torch.randn(3, 11, CONFIG.d_model)
    full = trunk.logits(run_blocks(trunk, blocks, x))
    cache = trunk.new_cache(3, 11, layers)
    parts = [run_blocks(trunk, blocks, x[:, a:b], cache) for a, b in ((0, 4), (4, 5), (5, 9), (9, 11))]
    assert cache.length == 11
    torch.testing.assert_close(trunk.logits(torch.cat(parts, dim=1)), full, rtol=0, atol=1e-5)


# --- what cannot be done ---------------------------------------------------------------------------------------------

def test_future_summary_prediction_cannot_draft():
    model = build(lambda: FSPBoW(tau=3))
    with pytest.raises(UsageError, match="objective 'fsp_bow' has no heads that draft tokens.*allowed: ntp, "
                                         "parallel_mtp, causal_mtp, sequential_mtp"):
        generate(model, torch.zeros(1, 3, dtype=torch.long), 4, speculative=True)
    assert generate(model, torch.zeros(1, 3, dtype=torch.long), 4)[0].shape == (1, 4)  # plain decoding works


def test_speculative_decoding_is_greedy_only():
    with pytest.raises(UsageError, match="temperature=0.8 is not allowed"):
        generate(build(NTP), torch.zeros(1, 3, dtype=torch.long), 4, speculative=True, temperature=0.8)


def test_stats_add_up_over_calls():
    total = DecodeStats()
    total.add(DecodeStats(trunk_passes=3, row_passes=3, row_tokens=6, drafted=[2], accepted=[1]))
    total.add(DecodeStats(trunk_passes=2, row_passes=4, row_tokens=6, drafted=[3, 3], accepted=[3, 1]))
    assert (total.trunk_passes, total.row_passes, total.row_tokens) == (5, 7, 12)
    assert total.drafted == [5, 3] and total.accepted == [4, 1]
    assert total.acceptance == [0.8, 1 / 3] and total.tokens_per_pass == 12 / 7
