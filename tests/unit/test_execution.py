"""How heads and losses run (`objectives.execution`): compiled, with head blocks checkpointed, or with Liger-Kernel's
loss, every objective's loss and gradients are the eager, kept-activation, foresight-kernel ones."""

import sys
import types
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import objectives
from objectives import IGNORE
from objectives.execution import Execution, executing
from objectives.fused import _liger_cross_entropy, linear_cross_entropy
from suite.checkpoints import attach, attach_stand_ins
from suite.decoding import generate
from suite.errors import UsageError
from suite.model import Block, Trunk, compile_blocks
from suite.sizes import ModelConfig

CONFIG = ModelConfig(n_layer=2, d_model=32, n_head=2, vocab_size=300)  # V > 8d: heads run one at a time
SPECS = [("ntp", {}), ("parallel_mtp", {"n": 3}), ("parallel_mtp", {"n": 2, "layout": "siblings"}),
         ("causal_mtp", {"n": 3}), ("sequential_mtp", {"depth": 2}), ("fsp_bow", {"tau": 3}),
         ("fsp_revlm", {"reverse_lm": "stand-in"})]


def step(name: str, options: dict, settings: Execution, compiled: bool = False, separator: int | None = None):
    """One training step's loss, metrics and every gradient, from the same initial weights and tokens."""
    torch.manual_seed(3)
    trunk = Trunk(CONFIG)
    objective = objectives.build(name, **options)
    attach_stand_ins(objective, trunk) if name == "fsp_revlm" else attach(objective, trunk)
    if compiled:
        compile_blocks(trunk), compile_blocks(objective)
    objective.separator = separator
    tokens = torch.randint(0, CONFIG.vocab_size, (3, 24), generator=torch.Generator().manual_seed(5))
    with trunk.within_documents(tokens, separator), executing(settings):
        loss, metrics = objective.loss(trunk, objective.hidden(trunk, tokens), tokens)
    loss.backward()
    grads = {name: p.grad for name, p in [*trunk.named_parameters(), *objective.named_parameters()]
             if p.grad is not None}
    return loss.detach(), {k: v.detach() for k, v in metrics.items()}, grads


@pytest.mark.parametrize("name, options", SPECS)
def test_checkpointed_head_blocks_give_the_same_loss_and_gradients_bit_for_bit(name, options):
    loss, metrics, grads = step(name, options, Execution())
    loss_c, metrics_c, grads_c = step(name, options, Execution(checkpoint_heads=True))
    assert torch.equal(loss, loss_c) and metrics.keys() == metrics_c.keys() and grads.keys() == grads_c.keys()
    for key in grads:
        assert torch.equal(grads[key], grads_c[key]), key


def test_checkpointing_keeps_only_a_head_blocks_input():
    """What checkpointing buys: the tensors a head block's forward saves for the backward pass shrink to its
    input (counted with saved-tensor hooks on one stacked head over the trunk output)."""
    trunk = Trunk(CONFIG)
    objective = objectives.build("parallel_mtp", n=2, headwise=False)
    attach(objective, trunk)
    hidden = trunk(torch.randint(0, CONFIG.vocab_size, (2, 16))).detach().requires_grad_()
    from objectives.heads import run_blocks

    def saved(settings):
        count = []
        with executing(settings), torch.autograd.graph.saved_tensors_hooks(lambda t: count.append(t.shape) or t,
                                                                           lambda t: t):
            run_blocks(trunk, objective.heads[0], hidden)
        return count

    assert saved(Execution(checkpoint_heads=True)) == [hidden.shape]
    assert len(saved(Execution())) > 20  # norms, projections, attention, SwiGLU: each keeps what it read


@pytest.fixture(scope="module")
def compiled_steps():
    """Eager and compiled steps of the objectives whose code paths differ (the plain head, stacked and chained
    heads one at a time, a sequential module reading embeddings), compiled once for the module."""
    chosen = [SPECS[0], SPECS[1], SPECS[4]]
    return {name: (step(name, options, Execution()), step(name, options, Execution(compile=True), compiled=True))
            for name, options in chosen}


@pytest.mark.parametrize("name", ["ntp", "parallel_mtp", "sequential_mtp"])
def test_compiled_blocks_and_loss_give_the_eager_loss_and_gradients(compiled_steps, name):
    (loss, metrics, grads), (loss_c, metrics_c, grads_c) = compiled_steps[name]
    torch.testing.assert_close(loss_c, loss, rtol=1e-5, atol=1e-6)
    assert metrics.keys() == metrics_c.keys() and grads.keys() == grads_c.keys()
    for key in metrics:
        torch.testing.assert_close(metrics_c[key], metrics[key], rtol=1e-5, atol=1e-6)
    for key in grads:
        torch.testing.assert_close(grads_c[key], grads[key], rtol=1e-4, atol=1e-6), key


def test_compiled_blocks_follow_the_sequence_length():
    """A length the compiled blocks have not seen (validation's, a corpus's last row) recompiles once with that
    dimension dynamic, and every length gives the eager hidden states."""
    torch.manual_seed(0)
    eager, compiled = Trunk(CONFIG), Trunk(CONFIG)
    compiled.load_state_dict(eager.state_dict())
    compile_blocks(compiled)
    for length in (24, 17, 9):
        tokens = torch.randint(0, CONFIG.vocab_size, (2, length))
        torch.testing.assert_close(compiled(tokens), eager(tokens), rtol=1e-5, atol=1e-5)


def test_compiled_blocks_keep_document_masks_and_decode_eagerly(compiled_steps):
    """Within documents (a mask in the rope) the compiled step is the eager one; a compiled trunk decodes with its
    KV cache eagerly (no recompile per length) and gives the eager tokens."""
    loss, _, grads = step("parallel_mtp", {"n": 3}, Execution(), separator=7)
    loss_c, _, grads_c = step("parallel_mtp", {"n": 3}, Execution(compile=True), compiled=True, separator=7)
    torch.testing.assert_close(loss_c, loss, rtol=1e-5, atol=1e-6)
    for key in grads:
        torch.testing.assert_close(grads_c[key], grads[key], rtol=1e-4, atol=1e-6)

    torch.manual_seed(0)
    model = types.SimpleNamespace(trunk=Trunk(CONFIG), objective=objectives.build("ntp"))
    prompts = torch.randint(0, CONFIG.vocab_size, (2, 5))
    eager, _ = generate(model, prompts, 6)
    assert compile_blocks(model.trunk) == CONFIG.n_layer and all(b.compiled for b in model.trunk.blocks)
    calls = []
    original = Block.eager
    Block.eager = lambda self, *args: calls.append(args[2] is not None) or original(self, *args)
    try:
        compiled, _ = generate(model, prompts, 6)
    finally:
        Block.eager = original
    assert torch.equal(compiled, eager) and calls and all(calls)  # every pass went eager, with its cache


def test_compiled_chunk_loss_equals_the_eager_one_on_a_chunked_batch():
    """Several chunks, the last one shorter (a recompile with a dynamic row count), ignored targets."""
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(37, 8, generator=g), torch.randn(50, 8, generator=g)
    targets = torch.randint(0, 50, (37,), generator=g)
    targets[::5] = IGNORE
    for wanted in (True, False):
        xs, ws = x.clone().requires_grad_(wanted), weight.clone().requires_grad_(wanted)
        eager = linear_cross_entropy(xs, ws, targets, 2.0, chunk_logits=50 * 8)
        with executing(Execution(compile=True)):
            xc, wc = x.clone().requires_grad_(wanted), weight.clone().requires_grad_(wanted)
            compiled = linear_cross_entropy(xc, wc, targets, 2.0, chunk_logits=50 * 8)
        for a, b in zip(compiled, eager):
            torch.testing.assert_close(a, b)
        if wanted:
            eager[0].backward(), compiled[0].backward()
            torch.testing.assert_close(xc.grad, xs.grad), torch.testing.assert_close(wc.grad, ws.grad)


@dataclass
class _Output:
    loss: torch.Tensor
    token_accuracy: torch.Tensor


def _stand_in_liger(input, weight, target, ignore_index=-100, reduction="mean", return_token_accuracy=False):
    """Liger-Kernel's functional API (loss mean over non-ignored targets, token accuracy), in plain PyTorch."""
    logits = input @ weight.T
    valid = target != ignore_index
    accuracy = ((logits.argmax(-1) == target) & valid).sum() / valid.sum()
    return _Output(F.cross_entropy(logits.float(), target, ignore_index=ignore_index), accuracy)


def test_the_liger_path_returns_what_the_foresight_kernel_returns(monkeypatch):
    """The glue around Liger's kernel (its API stood in by plain PyTorch): the scaled loss, the unscaled mean,
    the accuracy, their gradients, and a batch with no target at all giving 0 rather than Liger's 0/0."""
    module = types.ModuleType("liger_kernel.transformers.functional")
    module.liger_fused_linear_cross_entropy = _stand_in_liger
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.functional", module)
    g = torch.Generator().manual_seed(1)
    x, weight = torch.randn(20, 8, generator=g), torch.randn(30, 8, generator=g)
    targets = torch.randint(0, 30, (20,), generator=g)
    targets[3:7] = IGNORE
    xs, ws, xl, wl = (t.clone().requires_grad_() for t in (x, weight, x, weight))
    ours = linear_cross_entropy(xs, ws, targets, 0.5)
    liger = _liger_cross_entropy(xl, wl, targets, targets != IGNORE, 0.5)
    for a, b in zip(liger, ours):
        torch.testing.assert_close(a, b)
    ours[0].backward(), liger[0].backward()
    torch.testing.assert_close(xl.grad, xs.grad), torch.testing.assert_close(wl.grad, ws.grad)
    nothing = torch.full((20,), IGNORE)
    empty = _liger_cross_entropy(xl, wl, nothing, nothing != IGNORE, 0.5)
    assert [float(v.detach()) for v in empty] == [0.0, 0.0, 0.0] and empty[0].requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Liger-Kernel's Triton kernels run on CUDA")
def test_liger_kernel_on_cuda_matches_the_foresight_kernel():
    pytest.importorskip("liger_kernel")
    g = torch.Generator(device="cuda").manual_seed(2)
    x, weight = torch.randn(300, 64, device="cuda", generator=g), torch.randn(4000, 64, device="cuda", generator=g)
    targets = torch.randint(0, 4000, (300,), device="cuda", generator=g)
    targets[::7] = IGNORE
    results = []
    for kernel in ("foresight", "liger"):
        xs, ws = x.clone().requires_grad_(), weight.clone().requires_grad_()
        with executing(Execution(loss_kernel=kernel)):
            out = linear_cross_entropy(xs, ws, targets, 1.5)
        out[0].backward()
        results.append((out, xs.grad, ws.grad))
    (ours, gx, gw), (liger, lx, lw) = results
    for a, b in zip(liger, ours):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lx, gx, rtol=1e-3, atol=1e-5), torch.testing.assert_close(lw, gw, rtol=1e-3, atol=1e-5)


def test_execution_settings_refuse_bad_values_in_one_line(monkeypatch):
    with pytest.raises(UsageError, match="loss_kernel.*'fast'.*auto, foresight, liger"):
        Execution(loss_kernel="fast")
    monkeypatch.setattr("objectives.execution.liger_installed", lambda: False)
    with pytest.raises(UsageError, match="loss_kernel=liger needs Liger-Kernel.*allowed: auto or foresight"):
        Execution(loss_kernel="liger")
    assert Execution(loss_kernel="auto").kernel_for(torch.zeros(2)) == "foresight"
    monkeypatch.setattr("objectives.execution.liger_installed", lambda: True)
    with pytest.raises(UsageError, match="loss_kernel=liger runs on CUDA and the model is on cpu"):
        Execution(loss_kernel="liger").kernel_for(torch.zeros(2))
    assert Execution(loss_kernel="auto").kernel_for(torch.zeros(2)) == "foresight"  # auto: liger on CUDA only
