import pytest
import torch

import tasks
from suite.errors import UsageError
from tasks import TreePath

SMALL = dict(branching=2, depth=3, num_nodes=20, num_train=3000, num_val=100, num_test=200, seed=5)


def parse(row_text: str):
    """(edges, root, goal, answer path) from a row's text, by the text format alone."""
    prompt, answer = row_text.split(" = ")
    edge_text, query = prompt.split(" / ")
    edges = [tuple(map(int, e.split())) for e in edge_text.split(" | ")]
    root, goal = map(int, query.split())
    words = answer.split()
    assert words[-1] == "<eos>"
    return edges, root, goal, [int(n) for n in words[:-1]]


@pytest.fixture(scope="module")
def task() -> TreePath:
    return TreePath(**SMALL)


@pytest.mark.parametrize("branching, depth", [(2, 3), (3, 2)])
def test_trees_are_full_and_the_answer_is_the_root_to_goal_path(branching, depth):
    task = TreePath(branching=branching, depth=depth, num_nodes=20, num_train=50, num_val=10, num_test=100)
    for row in task.examples("test").tokens:
        edges, root, goal, path = parse(task.decode(row))
        children: dict[int, list[int]] = {}
        parent = {}
        for u, v in edges:
            children.setdefault(u, []).append(v)
            assert v not in parent  # one parent each: a tree
            parent[v] = u
        assert root not in parent and set(children) | set(parent) == {root} | set(parent)
        levels, frontier = [], [root]
        while frontier:  # breadth first from the root: every inner node has `branching` children
            levels.append(frontier)
            frontier = [c for node in frontier for c in children.get(node, [])]
        assert [len(level) for level in levels] == [branching ** k for k in range(depth + 1)]
        assert goal in levels[-1]  # a leaf
        walk = [goal]
        while walk[-1] != root:
            walk.append(parent[walk[-1]])
        assert path == walk[::-1] and len(path) == depth + 1


def test_splits_are_deterministic_and_held_out_trees_never_trained_on(task):
    again = TreePath(**SMALL)
    for split in ("train", "val", "test"):
        assert torch.equal(task.examples(split).tokens, again.examples(split).tokens)
    assert not torch.equal(task.examples("test").tokens, TreePath(**{**SMALL, "seed": 6}).examples("test").tokens)

    def key(row):  # the tree and goal, whatever the edge order
        edges, _, goal, _ = parse(task.decode(row))
        return goal, frozenset(edges)

    train = {key(row) for row in task.examples("train").tokens}
    val = [key(row) for row in task.examples("val").tokens]
    test = [key(row) for row in task.examples("test").tokens]
    assert len(set(val)) == len(val) and len(set(test)) == len(test) and not set(val) & set(test)
    assert not (set(val) | set(test)) & train


def test_held_out_trees_are_excluded_when_collisions_are_certain():
    # binary depth 2 on 7 labels: 7! * 4 / 2!^3 = 2520 instances; 3000 training draws would hit held-out ones
    task = TreePath(branching=2, depth=2, num_nodes=7, num_train=3000, num_val=300, num_test=300)
    key = lambda row: (row[-2].item(), frozenset(map(tuple, row[: 3 * 6].view(6, 3)[:, :2].tolist())))
    held = {key(r) for s in ("val", "test") for r in task.examples(s).tokens}
    assert len(held) == 600 and not held & {key(r) for r in task.examples("train").tokens}


def test_layout_loss_mask_and_tokenizer(task):
    train = task.examples("train")
    assert task.prompt_len == 3 * 14 + 3 and train.tokens.shape[1] == task.prompt_len + 4 + 1 == task.seq_len
    expected = torch.zeros(task.seq_len, dtype=torch.bool)
    expected[task.prompt_len:] = True
    assert (train.loss_mask == expected).all() and TreePath(**{**SMALL, "loss_on": "all"}).examples("val").loss_mask.all()
    row = task.examples("val").tokens[0]
    assert task.tokenizer.encode(task.decode(row)).ids == row.tolist() and task.vocab_size == 6 + 20
    for row, doc in zip(task.examples("test").tokens[:20], task.documents("test")[:20]):
        assert task.tokenizer.encode(doc["prompt"] + " " + doc["answer"] + " <eos>").ids == row.tolist()


def test_score_by_hand():
    # root 3, children 4 and 1; 4 -> 8, 0; 1 -> 6, 9; goal 8
    doc = {"prompt": "4 8 | 3 4 | 3 1 | 1 6 | 4 0 | 1 9 / 3 8 =", "answer": "3 4 8"}
    assert TreePath.score(doc, "3 4 8 <eos>") == {"path_acc": 1.0, "first_branch_acc": 1.0}
    assert TreePath.score(doc, "3 1 6") == {"path_acc": 0.0, "first_branch_acc": 0.0}  # down the wrong branch
    assert TreePath.score(doc, "3 4 0") == {"path_acc": 0.0, "first_branch_acc": 1.0}  # right branch, wrong leaf
    assert TreePath.score(doc, "") == {"path_acc": 0.0, "first_branch_acc": 0.0}
    reverse = {**doc, "answer": "8 4 3"}
    assert TreePath.score(reverse, "8 4 3") == {"path_acc": 1.0, "first_branch_acc": 1.0}
    assert TreePath.score(reverse, "8 1 3") == {"path_acc": 0.0, "first_branch_acc": 0.0}


def test_evaluate_agrees_with_score_on_noisy_completions(task):
    batch = {"tokens": task.examples("test").tokens[:64]}
    P, L = task.prompt_len, task.path_length
    gold = batch["tokens"][:, P: P + L]
    torch.manual_seed(0)
    noisy = torch.where(torch.rand(gold.shape) < 0.15, torch.randint(6, 26, gold.shape), gold)
    scores = task.evaluate(lambda prompts, n: noisy[:, :n], batch)
    for i, doc in enumerate(task.documents("test")[:64]):
        assert task.score(doc, task.decode(noisy[i])) == {"path_acc": scores["path_acc"][i].item(),
                                                        "first_branch_acc": scores["first_branch_acc"][i].item()}
    assert 0 < scores["path_acc"].mean() < 1


def test_reverse_order_is_the_same_trees_goal_first(task):
    reverse = TreePath(**SMALL, answer_order="reverse")
    P, L = task.prompt_len, task.path_length
    forward_rows, reverse_rows = task.examples("train").tokens[:100], reverse.examples("train").tokens[:100]
    assert torch.equal(forward_rows[:, :P], reverse_rows[:, :P])
    assert torch.equal(reverse_rows[:, P: P + L], forward_rows[:, P: P + L].flip(1))


def test_chance_levels():
    assert TreePath.chance("path_acc", {"branching": 2, "depth": 3}) == (0.25, "1/branching^(depth-1) = 1/4")
    assert TreePath.chance("first_branch_acc", {"branching": 3, "depth": 3})[0] == pytest.approx(1 / 3)


@pytest.mark.parametrize("options, message", [
    (dict(branching=1), "tree_path branching=1 is out of range; allowed: >= 2"),
    (dict(depth=1), "tree_path depth=1 is out of range; allowed: >= 2"),
    (dict(num_nodes=14), "tree_path num_nodes=14 is too small for branching=2, depth=3; allowed: >= the tree's 15"),
    (dict(depth=2, num_nodes=7, num_val=1000, num_test=1000), "allow 2520 distinct trees"),
    (dict(num_train=0), "tree_path num_train=0 is out of range; allowed: >= 1"),
    (dict(answer_order="sideways"), "task tree_path: answer_order: Expected .*forward.*reverse.*Got value: sideways"),
    (dict(loss_on="prompt"), "task tree_path: loss_on: Expected .*answer.*all.*Got value: prompt"),
    (dict(width=3), "task tree_path: unknown option 'width'; allowed: branching, depth, num_nodes"),
])
def test_bad_options_are_one_line_usage_errors(options, message):
    with pytest.raises(UsageError, match=message) as err:
        tasks.build("tree_path", **options)
    assert "\n" not in str(err.value)


def test_lm_eval_scorer_gives_nothing_for_a_path_down_the_wrong_branch():
    from tasks.tree_path import process_results  # what tasks/tree_path.yaml hands lm-eval

    doc = {"prompt": "4 8 | 3 4 | 3 1 | 1 6 | 4 0 | 1 9 / 3 8 =", "answer": "3 4 8"}
    assert process_results(doc, ["3 1 9 <eos>"]) == {"path_acc": 0.0, "first_branch_acc": 0.0}
    assert process_results(doc, ["3 4 8 <eos>"]) == {"path_acc": 1.0, "first_branch_acc": 1.0}
