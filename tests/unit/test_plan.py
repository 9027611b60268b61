"""Where a model keeps its plan (`suite.plan`): each head's teacher-forced accuracy on each answer token, and plan
decoding, checked on hand-built predictions and on scripted models whose heads are known to plan, or known to
guess; and each head's gradient on the shared state (`objectives.heads.head_gradients`) against plain autograd."""

from types import SimpleNamespace

import pytest
import torch

from objectives import ParallelMTP, SequentialMTP, future_targets, token_loss
from objectives.heads import gradient_alignment, head_gradients
from suite.errors import UsageError
from suite.model import Trunk
from suite.plan import decode_rules, plan_decode, plan_report, plan_scores
from tasks import StarGraph

TASK = StarGraph(degree=2, path_length=4, num_nodes=12, num_train=200, num_val=100, num_test=100, seed=3)


def test_head_accuracy_reads_head_k_at_the_position_k_before_each_answer_token():
    """A prompt of P tokens, then the 4 path nodes and <eos>: head 1 right everywhere but at node 1; head 2 right
    only at node 1, which it predicts from `=` (position P - 1), before any answer token is read."""
    tokens = TASK.examples("val").tokens[:1]
    P = TASK.prompt_len
    predicted = torch.zeros(1, tokens.shape[1] - 1, 2, dtype=torch.long)  # positions 0 .. T - 2
    for position in range(tokens.shape[1] - 1):
        for k in (1, 2):
            if position + k < tokens.shape[1]:
                truth = int(tokens[0, position + k])
                right = (k == 1) != (position + k == P + 1)
                predicted[0, position, k - 1] = truth if right else 0
    right = TASK.head_accuracy(predicted, tokens)
    assert right.tolist() == [[[1, 0, 1, 1, 1], [0, 1, 0, 0, 0]]]
    assert TASK.answer_token_names() == ["node 0", "node 1", "node 2", "node 3", "<eos>"] and TASK.arm_index == 1


def gold_path(task, prompt: list[int]) -> list[int]:
    """The path of a star-graph prompt, found the obvious way: from the goal back along parents to the source."""
    words = [task.tokenizer.id_to_token(t) for t in prompt]
    slash = words.index("/")
    parent = {words[i + 1]: words[i] for i in range(0, slash, 3)}
    source, goal = words[slash + 1], words[slash + 2]
    path = [goal]
    while path[-1] != source:
        path.append(parent[path[-1]])
    return [task.token_id(word) for word in reversed(path)] + [task.token_id("<eos>")]


def first_arm(task, prompt: list[int]) -> list[int]:
    """The path along the arm whose first edge the prompt lists first: a guess, right when that arm is the goal's."""
    words = [task.tokenizer.id_to_token(t) for t in prompt]
    slash = words.index("/")
    children = {}
    for i in range(0, slash, 3):
        children.setdefault(words[i], []).append(words[i + 1])
    path = [words[slash + 1]]
    while path[-1] in children:
        path.append(children[path[-1]][0])
    return [task.token_id(word) for word in path] + [task.token_id("<eos>")]


class Scripted(torch.nn.Module):
    """A test double of a 3-head objective on the star graph. Head 1 follows edges from the token before it and
    guesses the first step (the first-listed arm, Clever Hans); head 2 always says token 0; head 3 knows the path
    (`planner`) or takes the first-listed arm's (a guesser). Logits are one-hot at 10."""

    n = 3

    def __init__(self, task, planner: bool):
        super().__init__()
        self.task, self.planner = task, planner

    def inputs(self, tokens, mask=None):
        return tokens

    def draft_logits(self, trunk, ids):
        P, vocab = self.task.prompt_len, self.task.tokenizer.get_vocab_size()
        logits = torch.zeros(ids.shape[0], ids.shape[1], self.n, vocab)
        for row in range(ids.shape[0]):
            prompt = ids[row, :P].tolist()
            truth, guess = gold_path(self.task, prompt), first_arm(self.task, prompt)
            for t in range(ids.shape[1]):
                for k in (1, 2, 3):
                    j = t + k - P  # the answer token head k at t predicts
                    token = 0
                    if k == 1 and 0 <= j:
                        if j == 0 or j == 1:
                            token = guess[j]
                        else:  # the successor of the node just read, by the prompt's edges
                            node = self.task.tokenizer.id_to_token(int(ids[row, t]))
                            words = [self.task.tokenizer.id_to_token(x) for x in prompt]
                            nxt = [words[i + 1] for i in range(0, words.index("/"), 3) if words[i] == node]
                            token = self.task.token_id(nxt[0]) if nxt else self.task.token_id("<eos>")
                    elif k == 3 and 0 <= j < len(truth):
                        token = (truth if self.planner else guess)[j]
                    logits[row, t, k - 1, token] = 10.0
        return logits

    head_logits = draft_logits


def batch_of(task, count):
    examples = task.examples("val")
    return {"tokens": examples.tokens[:count], "loss_mask": examples.loss_mask[:count],
            "prompt_len": examples.prompt_len[:count]}


def test_the_plan_is_found_in_the_head_that_holds_it_and_not_in_a_guesser():
    batch = batch_of(TASK, 40)
    lucky = torch.tensor([first_arm(TASK, row[: TASK.prompt_len].tolist())[1] == gold_path(
        TASK, row[: TASK.prompt_len].tolist())[1] for row in batch["tokens"]]).float().mean()
    assert 0.2 < lucky < 0.8  # the first-listed arm is the goal's about half the time

    planner = plan_scores(Scripted(TASK, planner=True), None, TASK, batch)
    assert planner["first_step/head_1"].mean() == lucky
    assert planner["first_step/head_2"].mean() == 0
    assert planner["first_step/head_3"].mean() == 1  # from the goal token, three positions before node 1
    assert [planner[f"plan/head_3/token_{i}"].mean() for i in range(5)] == [1, 1, 1, 1, 1]
    assert planner["decode_head_3/path_acc"].mean() == 1  # the plan, written: not next-token decoding
    assert planner["decode_head_2/path_acc"].mean() == 0

    guesser = plan_scores(Scripted(TASK, planner=False), None, TASK, batch)
    assert guesser["first_step/head_3"].mean() == lucky  # no head holds a plan
    assert guesser["decode_head_3/path_acc"].mean() == lucky
    assert decode_rules(Scripted(TASK, True)) == ["head_2", "head_3", "vote"]


def test_plan_report_averages_a_split():
    cpu = SimpleNamespace(embed=SimpleNamespace(weight=torch.zeros(1)))  # where the batches go: the trunk's device
    report = plan_report(Scripted(TASK, planner=True), cpu, TASK, "test", batch_size=30)
    scores = plan_scores(Scripted(TASK, planner=True), None, TASK, batch_of_split(TASK, "test"))
    assert report["examples"] == 100 and report["first_step_token"] == 1
    assert report["heads"]["head_3"] == [1.0] * 5
    assert report["first_step"]["head_1"] == pytest.approx(float(scores["first_step/head_1"].mean()))
    assert report["decode"]["head_3"] == {"path_acc": 1.0, "arm_acc": 1.0}


def batch_of_split(task, split):
    examples = task.examples(split)
    return {"tokens": examples.tokens, "loss_mask": examples.loss_mask, "prompt_len": examples.prompt_len}


class Table(torch.nn.Module):
    """Drafts from a table: head k at position t puts log-probabilities `scores[k][t]` on tokens 0..2."""

    n = 2

    def __init__(self, scores):
        super().__init__()
        self.scores = scores

    def draft_logits(self, trunk, ids):
        logits = torch.full((ids.shape[0], ids.shape[1], 2, 3), -1e9)
        for k in (1, 2):
            for t in range(ids.shape[1]):
                logits[:, t, k - 1] = torch.tensor(self.scores[k][t]).log()
        return logits


def test_vote_adds_each_heads_log_probabilities_from_its_own_position():
    # a prompt of 2 tokens, then 2 tokens written. Token 0 (position 2): head 1 at 1 says [0.1, 0.5, 0.4], head 2
    # at 0 says [0.1, 0.2, 0.7]: products 0.01, 0.10, 0.28 -> 2. Token 1 (position 3): head 1 at 2 [0.6, 0.3, 0.1]
    # times head 2 at 1 [0.1, 0.8, 0.1]: 0.06, 0.24, 0.01 -> 1. Head 1 alone: 1 then 0; head 2 alone: 2 then 1.
    table = Table({1: [[0.3, 0.3, 0.4], [0.1, 0.5, 0.4], [0.6, 0.3, 0.1], [1, 0, 0]],
                   2: [[0.1, 0.2, 0.7], [0.1, 0.8, 0.1], [1, 0, 0], [1, 0, 0]]})
    prompts = torch.zeros(1, 2, dtype=torch.long)
    assert plan_decode(table, None, prompts, 2, "vote").tolist() == [[2, 1]]
    assert plan_decode(table, None, prompts, 2, "head_2").tolist() == [[2, 1]]
    with pytest.raises(UsageError, match="plan decoding rule 'head_3' is not one of Table's; allowed: head_2, vote$"):
        plan_decode(table, None, prompts, 2, "head_3")


# --- each head's gradient on the shared state ------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: ParallelMTP(n=3, layout="stacked"), lambda: ParallelMTP(n=3),
                                  lambda: ParallelMTP(n=2, head_layers=0, branch_layer=1)],
                         ids=["stacked", "siblings", "linear off block 1"])
def test_head_gradients_are_each_heads_own_gradient_on_the_branch_state(make, tiny_config):
    """Against autograd of each head's loss, written here from the trunk's modules and `token_loss`: head 1 through
    the trunk's blocks after the branch, head k through its own blocks; the gradient is on the branch state."""
    torch.manual_seed(0)
    trunk, objective = Trunk(tiny_config), make()
    objective.attach(trunk)
    tokens = torch.randint(0, 23, (3, 9))
    with torch.inference_mode():  # as in validation
        found = head_gradients(objective, trunk, tokens)
    depth = objective.branch_depth(trunk)
    shared = trunk(tokens, depth=depth).detach().requires_grad_()
    rope = trunk.rope(0, 9)
    for k in range(1, objective.n + 1):
        state = shared
        for block in (trunk.blocks[depth:] if k == 1 else objective.heads[k - 2]):
            state = block(state, rope)
        loss = token_loss(trunk.logits(state), future_targets(tokens, k))[0]
        (expected,) = torch.autograd.grad(loss, shared)
        torch.testing.assert_close(found[f"head_{k}"], expected, rtol=1e-5, atol=1e-7)


def test_gradient_alignment_by_hand():
    grads = {"head_1": torch.tensor([[3.0, 4.0]]), "head_2": torch.tensor([[-3.0, -4.0]]),
             "head_3": torch.tensor([[4.0, -3.0]]), "head_4": torch.zeros(1, 2)}
    found = {key: round(float(value), 6) for key, value in gradient_alignment(grads).items()}
    assert found == {"norm/head_1": 5.0, "norm/head_2": 5.0, "norm/head_3": 5.0, "norm/head_4": 0.0,
                     "cos/head_2": -1.0, "cos/head_3": 0.0, "cos/head_4": 0.0}


def test_sequential_modules_gradients_are_on_the_trunk_output(tiny_config):
    trunk, objective = Trunk(tiny_config), SequentialMTP(depth=1)
    objective.attach(trunk)
    found = head_gradients(objective, trunk, torch.randint(0, 23, (2, 8)))
    assert list(found) == ["head_1", "head_2"] and found["head_2"].shape == (2, 8, tiny_config.d_model)
    assert found["head_2"].abs().sum() > 0
