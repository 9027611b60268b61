import itertools

import numpy as np
import pytest
import torch

import tasks
from suite.errors import UsageError
from tasks import Sat
from tasks.sat import formula_keys

SMALL = dict(num_vars=5, num_train=2000, num_val=50, num_test=100, seed=3)


def clauses_of(prompt: str) -> list[list[int]]:
    """The formula of a prompt as signed variable numbers, by the text format alone."""
    assert prompt.endswith(" =")
    return [[int(literal) for literal in clause.split()] for clause in prompt[:-2].split(" | ")]


def satisfies(assignment: dict[int, bool], clauses) -> bool:
    return all(any(assignment[abs(lit)] == (lit > 0) for lit in clause) for clause in clauses)


def canonical(clauses, num_vars: int) -> tuple:
    """The formula up to variable renaming, clause order and literal order: the least of its renamed forms."""
    forms = []
    for perm in itertools.permutations(range(1, num_vars + 1)):
        renamed = sorted(tuple(sorted((perm[abs(lit) - 1] if lit > 0 else -perm[abs(lit) - 1]) for lit in clause))
                         for clause in clauses)
        forms.append(tuple(renamed))
    return min(forms)


@pytest.fixture(scope="module")
def task() -> Sat:
    return Sat(**SMALL)


def test_formulas_are_3_cnf_that_the_planted_answer_satisfies(task):
    assert task.num_clauses == round(4.26 * 5) == 21
    for doc in task.documents("test"):
        clauses = clauses_of(doc["prompt"])
        assert len(clauses) == 21
        assert all(len(c) == 3 and len({abs(lit) for lit in c}) == 3 for c in clauses)
        assert all(1 <= abs(lit) <= 5 for c in clauses for lit in c)
        answer = [int(lit) for lit in doc["answer"].split()]
        assert [abs(lit) for lit in answer] == [1, 2, 3, 4, 5]  # every variable, in order
        assert satisfies({abs(lit): lit > 0 for lit in answer}, clauses)


def test_sign_patterns_are_the_seven_satisfying_ones_uniformly():
    task = Sat(num_vars=6, num_clauses=40, num_train=1, num_val=1, num_test=1)
    variables, positive, assignment = task.formulas(np.random.default_rng(0), 4000)
    value = np.take_along_axis(assignment, variables.reshape(4000, -1), axis=1).reshape(variables.shape)
    true = (positive == value).astype(int) @ np.array([1, 2, 4])  # which literals the planted answer makes true
    counts = np.bincount(true.ravel(), minlength=8) / true.size
    assert counts[0] == 0 and np.allclose(counts[1:], 1 / 7, atol=0.005)
    assert np.allclose(np.bincount(np.sort(variables, axis=2)[..., 0].ravel()) / variables[..., 0].size,
                       [10 / 20, 6 / 20, 3 / 20, 1 / 20], atol=0.01)  # the least of 3 of 6 variables, uniformly


def test_any_satisfying_assignment_scores_and_clause_acc_counts_clauses():
    doc = {"prompt": "1 -2 3 | -1 2 3 | 1 2 -3 =", "answer": "1 2 3"}
    assert Sat.score(doc, "1 2 3 <eos>") == {"acc": 1.0, "clause_acc": 1.0, "valid": 1.0}
    assert Sat.score(doc, "-1 -2 -3") == {"acc": 1.0, "clause_acc": 1.0, "valid": 1.0}  # not planted, satisfies
    assert Sat.score(doc, "3 1 2") == {"acc": 1.0, "clause_acc": 1.0, "valid": 1.0}  # any order
    assert Sat.score(doc, "-1 2 -3") == {"acc": 0.0, "clause_acc": 2 / 3, "valid": 1.0}  # breaks the first
    assert Sat.score(doc, "1 2") == {"acc": 0.0, "clause_acc": 1.0, "valid": 0.0}  # x3 unassigned
    assert Sat.score(doc, "1 2 3 -3") == {"acc": 0.0, "clause_acc": 1.0, "valid": 0.0}  # x3 twice
    assert Sat.score(doc, "1 2 4") == {"acc": 0.0, "clause_acc": 1.0, "valid": 0.0}  # no x4 in a 3-variable answer
    assert Sat.score(doc, "") == {"acc": 0.0, "clause_acc": 0.0, "valid": 0.0}
    assert Sat.score(doc, "1 2 3\n-1") == {"acc": 1.0, "clause_acc": 1.0, "valid": 1.0}  # the first line only


def test_every_satisfying_assignment_of_generated_formulas_scores_one(task):
    for doc in task.documents("test")[:20]:
        clauses = clauses_of(doc["prompt"])
        for bits in itertools.product([False, True], repeat=5):
            assignment = dict(zip(range(1, 6), bits))
            text = " ".join(str(v) if b else f"-{v}" for v, b in assignment.items())
            assert Sat.score(doc, text)["acc"] == float(satisfies(assignment, clauses))


def test_keys_ignore_renaming_and_order_and_see_a_flipped_sign():
    # A = (x1 | -x2 | x3), B = (-x1 | x2 | x4); renamed x1 <-> x4, x2 <-> x3: A' = (x4 | -x3 | x2), B' = (-x4 | x3 | x1),
    # written B' first and with their literals in another order; then A with x2's sign flipped
    variables = np.array([[[0, 1, 2], [0, 1, 3]], [[0, 3, 2], [1, 3, 2]], [[0, 1, 2], [0, 1, 3]]])
    positive = np.array([[[1, 0, 1], [0, 1, 1]], [[1, 0, 1], [1, 1, 0]], [[1, 1, 1], [0, 1, 1]]], dtype=bool)
    keys = formula_keys(variables, positive, 4)
    assert keys[0] == keys[1] and keys[0] != keys[2]


def test_no_held_out_formula_is_trained_on_under_any_renaming():
    # 4 variables, 2 clauses: 37 formulas up to renaming, so training draws would repeat held-out ones, renamed
    task = Sat(num_vars=4, num_clauses=2, num_train=400, num_val=5, num_test=10, seed=1)
    forms = {split: [canonical(clauses_of(doc["prompt"]), 4) for doc in task.documents(split)]
             for split in ("train", "val", "test")}
    held = forms["val"] + forms["test"]
    assert len(set(held)) == len(held)
    assert not set(held) & set(forms["train"])
    other = Sat(num_vars=4, num_clauses=2, num_train=400, num_val=5, num_test=10, seed=2).documents("train")
    assert set(held) & {canonical(clauses_of(doc["prompt"]), 4) for doc in other}  # the check can fail: they hit


def test_keys_tell_apart_exactly_the_formulas_that_differ_up_to_renaming():
    task = Sat(num_vars=4, num_clauses=3, num_train=1, num_val=1, num_test=1)
    variables, positive, _ = task.formulas(np.random.default_rng(0), 3000)
    keys = formula_keys(variables, positive, 4).tolist()
    signed = (variables + 1) * np.where(positive, 1, -1)
    forms = [canonical(formula.tolist(), 4) for formula in signed]
    assert len(set(forms)) == 303  # brute force over the 24 renamings
    assert len(set(zip(keys, forms))) == len(set(forms)) == len(set(keys))  # one key per class, one class per key


def test_splits_are_deterministic_and_rows_match_documents(task):
    again = Sat(**SMALL)
    for split in ("train", "val", "test"):
        assert torch.equal(task.examples(split).tokens, again.examples(split).tokens)
    assert not torch.equal(task.examples("test").tokens, Sat(**{**SMALL, "seed": 4}).examples("test").tokens)
    rows = task.examples("test")
    assert rows.tokens.shape == (100, 4 * 21 + 5 + 1) and (rows.prompt_len == 84).all()
    assert rows.loss_mask[:, 84:].all() and not rows.loss_mask[:, :84].any()
    for row, doc in zip(rows.tokens[:20], task.documents("test")[:20]):
        assert task.tokenizer.encode(doc["prompt"] + " " + doc["answer"] + " <eos>").ids == row.tolist()


def test_training_validation_scores_generated_answers(task):
    batch = task.examples("val")[:8]
    P = task.prompt_len
    gold = lambda prompts, n: batch["tokens"][:, P: P + n]
    assert task.evaluate(gold, batch)["acc"].tolist() == [1.0] * 8
    empty = lambda prompts, n: torch.full((len(prompts), n), task.token_id("<eos>"))
    assert task.evaluate(empty, batch)["clause_acc"].tolist() == [0.0] * 8


@pytest.mark.parametrize("options, message", [
    (dict(num_vars=2), "sat num_vars=2 is out of range; allowed: >= 3"),
    (dict(num_clauses=0), "sat num_clauses=0 is out of range; allowed: >= 1"),
    (dict(ratio=0), r"sat ratio=0(\.0)? is out of range; allowed: > 0"),
    (dict(num_val=0), "sat num_val=0 is out of range; allowed: >= 1"),
    (dict(loss_on="prompt"), "task sat: loss_on: Expected a typing.Literal\\[.answer., .all.\\]. Got value: prompt"),
    (dict(clauses=3), "task sat: unknown option 'clauses'; allowed: num_vars, num_clauses, ratio"),
])
def test_bad_options_are_one_line_usage_errors(options, message):
    with pytest.raises(UsageError, match=message) as err:
        tasks.build("sat", **options)
    assert "\n" not in str(err.value)


def test_a_formula_space_too_small_for_the_held_out_splits_says_so():
    with pytest.raises(UsageError, match="cannot draw 500 sat test instances: only .* found") as err:
        Sat(num_vars=3, num_clauses=1, num_val=10, num_test=500).documents("test")
    assert "\n" not in str(err.value)


def test_lm_eval_scorer_credits_a_satisfying_assignment_that_is_not_the_planted_one():
    from tasks.sat import process_results  # what tasks/sat.yaml hands lm-eval

    doc = {"prompt": "1 -2 3 | -1 2 3 | 1 2 -3 =", "answer": "1 2 3"}
    assert process_results(doc, ["-1 -2 -3 <eos>"]) == {"acc": 1.0, "clause_acc": 1.0, "valid": 1.0}
    assert process_results(doc, ["1 -2 -3"])["acc"] == 0.0  # breaks (-x1 | x2 | x3)


def test_a_mix_trains_on_sat_text_and_scores_it_with_its_own_tokenizer():
    from tasks import Mix

    mix = Mix(components={"sat": 1.0, "tree_path": 1.0}, train_tokens=4000, seq_len=64, vocab_size=300,
              options={"sat": {"num_vars": 4, "num_train": 100, "num_val": 5, "num_test": 5},
                       "tree_path": {"depth": 2, "num_nodes": 10, "num_train": 100, "num_val": 5, "num_test": 5}})
    texts = [doc for doc in mix.documents("train")]
    assert {doc["task"] for doc in texts} == {"sat", "tree_path"}
    sat = mix.tasks["sat"]
    test = sat.examples("test", mix.tokenizer)  # a component scored on its own test split, the mix's tokens
    assert len(test) == 5 and mix.tokenizer.decode(test.tokens[0].tolist()).startswith(sat.documents("test")[0]["prompt"])


def test_the_control_trains_on_the_test_formulas_at_its_share(task):
    control = Sat(**SMALL, test_share=0.25)
    train, test = control.examples("train").tokens, control.examples("test").tokens
    honest = task.examples("train").tokens
    is_test = (train[:, None, :] == test[None]).all(dim=2).any(dim=1)
    assert is_test.sum() == 500 and torch.equal(train[~is_test], honest[~is_test])  # the rest unchanged
    assert is_test[:400].sum() == 100  # spread through the split, not bunched at one end
    assert torch.equal(control.examples("test").tokens, test) and torch.equal(task.examples("test").tokens, test)
    with pytest.raises(UsageError, match=r"sat test_share=1.0 is out of range; allowed: in \[0, 1\)"):
        Sat(test_share=1.0)
