from collections import Counter

import pytest
import torch

from suite.errors import UsageError
from tasks.base import EOS
from tasks.countdown import Countdown, evaluate_expression
from tests.conftest import oracle, validation_batch

SMALL = dict(count=4, max_number=12, max_target=50, num_train=3000, num_val=100, num_test=200, seed=3)
DOC = {"prompt": "3 5 7 1 -> 24 :", "answer": "( 7 - 3 ) * ( 5 + 1 )"}


@pytest.fixture(scope="module")
def task() -> Countdown:
    return Countdown(**SMALL)


def key(doc: dict) -> tuple:
    numbers, target = doc["prompt"].split("->")
    return tuple(sorted(map(int, numbers.split()))), int(target.split()[0])


@pytest.mark.parametrize("completion, acc, valid", [
    ("( 7 - 3 ) * ( 5 + 1 )", 1, 1),  # the gold answer
    ("( 5 + 1 ) * ( 7 - 3 ) <eos> junk", 1, 1),  # another correct expression; stops at <eos>
    ("(7-3)*(5+1)\n1 + 1", 1, 1),  # spacing does not matter; stops at a newline
    ("3 * 7 + 5 - 1 + 0", 0, 0),  # an extra number
    ("( 7 + 1 ) * 3", 0, 0),  # a missing number, right value
    ("3 * 7 + 5 - 1", 0, 1),  # uses the numbers, wrong value (25)
    ("( 7 - 3 ) * ( 5 + 5 )", 0, 0),  # a reused number instead of 1
    ("( 7 - 3 ) * ( 5 + 1", 0, 0),  # unbalanced parentheses
    ("7 / ( 5 - 5 ) + 3 * 1", 0, 0),  # division by zero (and 5 twice)
    ("__import__('os')", 0, 0),
    ("- 3 + 7 * 5 - 1", 0, 0),  # unary minus is not allowed
    ("3 ** 5 + 7 - 1", 0, 0),  # nor ** or //
    ("3 // 5 + 7 * 1", 0, 0),
    ("", 0, 0),
])
def test_score_by_hand(completion, acc, valid):
    assert Countdown.score(DOC, completion) == {"acc": float(acc), "valid": float(valid)}


def test_division_by_zero_with_the_right_numbers_is_valid_but_wrong():
    doc = {"prompt": "2 2 9 -> 9 :", "answer": "9 * ( 2 / 2 )"}
    assert Countdown.score(doc, "9 / ( 2 - 2 )") == {"acc": 0.0, "valid": 1.0}
    assert Countdown.score(doc, "9 / 2 * 2") == {"acc": 1.0, "valid": 1.0}  # exact: 4.5 * 2 is 9
    assert evaluate_expression("9 / ( 2 - 2 )") == ([9, 2, 2], None)


def test_every_instance_is_solvable_by_its_gold_answer(task):
    for split in ("train", "val", "test"):
        for doc in task.documents(split):
            numbers, target = key(doc)
            assert len(numbers) == 4 and all(1 <= n <= 12 for n in numbers) and 1 <= target <= 50
            assert task.score(doc, doc["answer"]) == {"acc": 1.0, "valid": 1.0}, doc


def test_answers_fit_the_generation_budget(task):
    longest = max(len(doc["answer"].split()) for split in ("train", "test") for doc in task.documents(split))
    assert longest + 1 <= task.generation["max_gen_toks"] == 12  # 4 numbers, 3 operators, 2 pairs, <eos>
    assert longest >= 9  # parentheses do occur


def test_splits_are_deterministic_by_seed(task):
    again = Countdown(**SMALL)
    for split in ("train", "val", "test"):
        assert again.documents(split) == task.documents(split)
    assert Countdown(**{**SMALL, "seed": 4}).documents("test") != task.documents("test")


def test_held_out_instances_are_distinct_and_never_in_train(task):
    train = {key(doc) for doc in task.documents("train")}
    val = [key(doc) for doc in task.documents("val")]
    test = [key(doc) for doc in task.documents("test")]
    assert len(set(val)) == 100 and len(set(test)) == 200
    assert not set(val) & train and not set(test) & train and not set(val) & set(test)
    assert len(task.documents("train")) == 3000


def test_targets_and_operators_are_varied(task):
    targets = Counter(key(doc)[1] for doc in task.documents("train"))
    assert len(targets) >= 45
    signs = Counter(word for doc in task.documents("train") for word in doc["answer"].split() if word in "+-*/")
    assert min(signs[s] for s in "+-*/") > 0.1 * sum(signs.values())


def test_token_ids_decode_back_to_the_documents(task):
    examples = task.examples("val")
    for row, start, doc in zip(examples.tokens, examples.prompt_len, task.documents("val")):
        assert task.decode(row[:start]) == doc["prompt"]
        assert task.decode(row[start:]).split(EOS)[0].strip() == doc["answer"]
        assert task.token_id("<unk>") not in row.tolist()
    assert task.vocab_size == 3 + 8 + 51


def test_loss_mask_covers_the_answer_unless_asked(task):
    examples = task.examples("val")
    positions = torch.arange(examples.tokens.shape[1])
    assert (examples.loss_mask == ((positions >= examples.prompt_len[:, None]) & (examples.tokens != 0))).all()
    assert Countdown(**{**SMALL, "loss_on": "all"}).examples("val").loss_mask[:, 0].all()


def test_evaluate_scores_an_oracle_one_and_garbage_zero(task):
    batch = validation_batch(task, 40)
    scores = task.evaluate(oracle(batch), batch)
    assert scores["acc"].tolist() == [1.0] * 40 and scores["valid"].tolist() == [1.0] * 40
    plus = task.token_id("+")
    scores = task.evaluate(lambda prompts, n: torch.full((len(prompts), n), plus), batch)
    assert scores["acc"].tolist() == [0.0] * 40 and scores["valid"].tolist() == [0.0] * 40


@pytest.mark.parametrize("options, message", [
    (dict(count=1), "countdown count=1 is out of range; allowed: in \\[2, 6\\]"),
    (dict(count=7), "countdown count=7 is out of range; allowed: in \\[2, 6\\]"),
    (dict(max_number=0), "countdown max_number=0 is out of range; allowed: >= 1"),
    (dict(max_target=0), "countdown max_target=0 is out of range; allowed: >= 1"),
    (dict(num_val=0), "countdown num_val=0 is out of range; allowed: >= 1"),
    (dict(loss_on="prompt"), "unknown countdown loss_on 'prompt'; known: answer, all"),
    (dict(count=2, max_number=2, max_target=3, num_val=5, num_test=5), "num_val \\+ num_test = 10 is too many"),
])
def test_bad_options_are_one_line_usage_errors(options, message):
    with pytest.raises(UsageError, match=message) as err:
        Countdown(**options)
    assert "\n" not in str(err.value)


def test_a_space_too_small_for_the_held_out_split_is_a_usage_error_not_a_hang():
    # count 2 from 1..3 with targets up to 9: fewer than 20 distinct instances exist
    task = Countdown(count=2, max_number=3, max_target=9, num_train=10, num_val=10, num_test=10)
    with pytest.raises(UsageError, match="cannot draw 10 countdown val instances") as err:
        task.documents("test")
    assert "\n" not in str(err.value)
