import numpy as np
import pytest
import torch

import tasks
from suite.errors import UsageError
from tasks import StarGraph

SMALL = dict(degree=3, path_length=4, num_nodes=15, num_train=3000, num_val=100, num_test=200, seed=7)


def parse(task: StarGraph, row: torch.Tensor):
    """(edges, source, goal, answer path) from a token row, by the text format alone."""
    text = task.decode(row).split()
    prompt, answer = " ".join(text).split(" = ")
    edge_text, query = prompt.split(" / ")
    edges = [tuple(map(int, e.split())) for e in edge_text.split(" | ")]
    source, goal = map(int, query.split())
    path = answer.split()
    assert path[-1] == "<eos>"
    return edges, source, goal, [int(n) for n in path[:-1]]


@pytest.fixture(scope="module")
def task() -> StarGraph:
    return StarGraph(**SMALL)


def test_graphs_are_stars_with_a_unique_path(task):
    for row in task.examples("test").tokens[:200]:
        edges, source, goal, path = parse(task, row)
        assert len(edges) == task.degree * (task.path_length - 1)
        successors: dict[int, list[int]] = {}
        for u, v in edges:
            successors.setdefault(u, []).append(v)
        assert len(successors[source]) == task.degree  # degree arms leave the source
        assert all(len(vs) == 1 for u, vs in successors.items() if u != source)  # then chains
        assert path[0] == source and path[-1] == goal and len(path) == task.path_length
        assert all((u, v) in edges for u, v in zip(path, path[1:]))  # the answer follows edges
        # uniqueness: walking each arm from the source, exactly one reaches the goal
        reach = 0
        for first in successors[source]:
            node, arm = first, [first]
            while node in successors:
                node = successors[node][0]
                arm.append(node)
            reach += goal in arm
        assert reach == 1
        assert len({u for e in edges for u in e}) == 1 + len(edges)  # all labels distinct


def test_splits_are_deterministic_by_seed():
    a, b = StarGraph(**SMALL), StarGraph(**SMALL)
    for split in ("train", "val", "test"):
        assert torch.equal(a.examples(split).tokens, b.examples(split).tokens)
    c = StarGraph(**{**SMALL, "seed": 8})
    assert not torch.equal(a.examples("test").tokens, c.examples("test").tokens)


def graph_key(task, row):
    edges, source, goal, _ = parse(task, row)
    return source, goal, frozenset(edges)


def test_no_test_or_val_graph_is_in_train_and_held_out_graphs_are_distinct(task):
    train = {graph_key(task, row) for row in task.examples("train").tokens}
    val = [graph_key(task, row) for row in task.examples("val").tokens]
    test = [graph_key(task, row) for row in task.examples("test").tokens]
    assert len(set(test)) == len(test) and len(set(val)) == len(val)
    assert not set(test) & train and not set(val) & train and not set(test) & set(val)


def test_sizes_and_layout(task):
    train = task.examples("train")
    assert len(train) == 3000 and len(task.examples("val")) == 100 and len(task.examples("test")) == 200
    edges = 3 * 3
    assert task.prompt_len == 3 * edges + 3 and train.tokens.shape[1] == task.prompt_len + task.path_length + 1
    assert (train.prompt_len == task.prompt_len).all()


def test_loss_mask_covers_the_answer_only_unless_asked():
    answer = StarGraph(**SMALL).examples("val")
    expected = torch.zeros(answer.tokens.shape[1], dtype=torch.bool)
    expected[StarGraph(**SMALL).prompt_len:] = True
    assert (answer.loss_mask == expected).all()
    assert StarGraph(**{**SMALL, "loss_on": "all"}).examples("val").loss_mask.all()


def test_tokenizer_round_trips_the_text_form(task):
    row = task.examples("val").tokens[0]
    assert task.tokenizer.encode(task.decode(row)).ids == row.tolist()
    assert task.vocab_size == 6 + 15


def test_evaluate_scores_oracle_and_wrong_answers(task):
    batch = {"tokens": task.examples("test").tokens[:50]}
    P = task.prompt_len

    def oracle(prompts, n):
        return batch["tokens"][:, P: P + n]

    def wrong_arm(prompts, n):
        """A perfect edge-follower that takes another arm at the source: the failure the first step measures."""
        answer = oracle(prompts, n).clone()
        for row, prompt in zip(answer, prompts):
            edges = prompt[: 3 * task.num_edges].view(-1, 3)[:, :2].tolist()
            successors = {u: v for u, v in edges if u != row[0]}  # off the source, each node has one successor
            node = next(v for u, v in edges if u == row[0] and v != row[1])
            for k in range(1, task.path_length):
                row[k], node = node, successors.get(node)
        return answer

    scores = task.evaluate(oracle, batch)
    assert scores["path_acc"].tolist() == [1.0] * 50 and scores["arm_acc"].tolist() == [1.0] * 50
    scores = task.evaluate(wrong_arm, batch)
    assert scores["path_acc"].sum() == 0 and scores["arm_acc"].sum() == 0
    assert scores["random_arm_acc"][0].item() == pytest.approx(1 / 3)


@pytest.mark.parametrize("options, message", [
    (dict(degree=1), "star_graph degree=1 is out of range; allowed: >= 2"),
    (dict(path_length=1), "star_graph path_length=1 is out of range; allowed: >= 2"),
    (dict(num_nodes=6), r"num_nodes=6 is too small for degree=2, path_length=4; allowed: >= .* = 7"),
    (dict(num_nodes=7, degree=2, path_length=4, num_val=2000, num_test=2000), "allow 5040 distinct graphs"),
    (dict(num_test=0), "star_graph num_test=0 is out of range"),
    (dict(loss_on="prompt"), "loss_on"),
    (dict(colour="red"), "task star_graph: unknown option 'colour'; allowed: degree, path_length, num_nodes, "),
])
def test_bad_options_are_one_line_usage_errors(options, message):
    with pytest.raises(UsageError, match=message) as err:
        tasks.build("star_graph", **options)
    assert "\n" not in str(err.value)


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UsageError, match="unknown task 'chess'; known: star_graph"):
        tasks.build("chess")


def test_smallest_graph_space_still_generates():
    # degree 2, path 2, 4 labels: 4 * 3 * 2 / 1! = 24 distinct graphs; 6 held out, train draws only the rest
    task = StarGraph(degree=2, path_length=2, num_nodes=4, num_train=50, num_val=3, num_test=3)
    held = {graph_key(task, r) for s in ("val", "test") for r in task.examples(s).tokens}
    assert len(held) == 6
    assert not held & {graph_key(task, r) for r in task.examples("train").tokens}
    assert np.unique(task.examples("train").tokens.numpy(), axis=0).shape[0] > 6


def test_documents_are_the_token_rows_as_text(task):
    rows, documents = task.examples("test").tokens, task.documents("test")
    assert len(documents) == len(rows)
    for row, doc in zip(rows[:50], documents[:50]):
        assert task.tokenizer.encode(doc["prompt"] + " " + doc["answer"] + " <eos>").ids == row.tolist()


def test_text_scores_agree_with_the_token_scores(task):
    """`score` (what lm-eval calls on generated text) and `evaluate` (training-time validation on token ids) must
    judge the same completions the same way."""
    batch = {"tokens": task.examples("test").tokens[:64]}
    P = task.prompt_len
    gold = batch["tokens"][:, P: P + task.path_length]
    torch.manual_seed(0)
    noisy = torch.where(torch.rand(gold.shape) < 0.15, torch.randint(6, 6 + 15, gold.shape), gold)
    token_scores = task.evaluate(lambda prompts, n: noisy[:, :n], batch)
    for i, doc in enumerate(task.documents("test")[:64]):
        text = task.decode(noisy[i]) + " <eos>"
        assert task.score(doc, text) == {"path_acc": token_scores["path_acc"][i].item(),
                                         "arm_acc": token_scores["arm_acc"][i].item()}
    assert 0 < token_scores["path_acc"].mean() < 1  # both right and wrong completions were judged


def test_score_by_hand():
    doc = {"prompt": "5 9 | 2 5 | 2 7 | 7 1 / 2 1 =", "answer": "2 7 1"}
    assert StarGraph.score(doc, "2 7 1 <eos>") == {"path_acc": 1.0, "arm_acc": 1.0}
    assert StarGraph.score(doc, " 2 7 1") == {"path_acc": 1.0, "arm_acc": 1.0}
    assert StarGraph.score(doc, "2 5 9") == {"path_acc": 0.0, "arm_acc": 0.0}
    assert StarGraph.score(doc, "2 7 9") == {"path_acc": 0.0, "arm_acc": 1.0}
    assert StarGraph.score(doc, "") == {"path_acc": 0.0, "arm_acc": 0.0}


def test_reverse_order_answers_goal_to_source_on_the_same_graphs(task):
    reverse = StarGraph(**SMALL, answer_order="reverse")
    for split in ("train", "test"):
        forward_rows, reverse_rows = task.examples(split).tokens[:100], reverse.examples(split).tokens[:100]
        P, L = task.prompt_len, task.path_length
        assert torch.equal(forward_rows[:, :P], reverse_rows[:, :P])  # the same graphs, the same prompts
        assert torch.equal(reverse_rows[:, P: P + L], forward_rows[:, P: P + L].flip(1))
        assert torch.equal(reverse_rows[:, P + L:], forward_rows[:, P + L:])  # <eos>
    for row in reverse.examples("test").tokens[:50]:  # each next node is the source of an edge into the last
        edges, source, goal, path = parse(reverse, row)
        assert path[0] == goal and path[-1] == source
        assert all((v, u) in edges for u, v in zip(path, path[1:]))


def test_reverse_order_scores_the_node_next_to_the_source_as_the_arm():
    doc = {"prompt": "5 9 | 2 5 | 2 7 | 7 1 / 2 1 =", "answer": "1 7 2"}  # goal 1 back to source 2
    assert StarGraph.score(doc, "1 7 2 <eos>") == {"path_acc": 1.0, "arm_acc": 1.0}
    assert StarGraph.score(doc, "1 5 2") == {"path_acc": 0.0, "arm_acc": 0.0}
    assert StarGraph.score(doc, "9 7 2") == {"path_acc": 0.0, "arm_acc": 1.0}
    assert StarGraph.score(doc, "2 7 1") == {"path_acc": 0.0, "arm_acc": 1.0}  # the forward path is not the answer
    reverse = StarGraph(**SMALL, answer_order="reverse")
    batch = {"tokens": reverse.examples("test").tokens[:20]}
    P = reverse.prompt_len
    wrong_arm = batch["tokens"][:, P: P + reverse.path_length].clone()
    wrong_arm[:, -2] = wrong_arm[:, 0]
    scores = reverse.evaluate(lambda prompts, n: wrong_arm[:, :n], batch)
    assert scores["arm_acc"].sum() == 0 and scores["path_acc"].sum() == 0
    with pytest.raises(UsageError, match="unknown star_graph answer_order 'sideways'; known: forward, reverse"):
        StarGraph(answer_order="sideways")
