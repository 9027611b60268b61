import ast
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from suite.errors import UsageError
from tasks.base import EOS
from tasks.synthetic_code import TEMPLATES, SyntheticCode, process_results

SMALL = dict(num_train=400, num_val=18, num_test=36, seed=2, vocab_size=512, timeout=5.0)


@pytest.fixture(scope="module")
def task() -> SyntheticCode:
    return SyntheticCode(**SMALL)


def scores(docs: list[dict], completions: list[str]) -> list[float]:
    """pass_at_1 of each completion, the sandbox runs side by side (each is its own process)."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda pair: SyntheticCode.score(*pair)["pass_at_1"], zip(docs, completions)))


def key(doc: dict) -> tuple[str, str]:
    """What a function does, whatever its name and argument: the docstring's first line and the body with the
    name and argument replaced."""
    tree = ast.parse(doc["prompt"] + doc["answer"]).body[0]
    summary = ast.get_docstring(tree).split("\n")[0]
    arg = tree.args.args[0].arg
    return re.sub(rf"\b{arg}\b", "ARG", summary), re.sub(rf"\b{arg}\b", "ARG", doc["answer"])


def test_every_gold_body_passes_its_hidden_tests_and_empty_or_wrong_bodies_fail(task):
    docs = task.documents("test")[: len(TEMPLATES)]  # round-robin: one function of every template
    assert len({key(doc)[1].split("(")[0] for doc in docs}) > 10
    assert scores(docs, [doc["answer"] for doc in docs]) == [1.0] * len(docs)
    wrong = ["", "    return 0", "    return None"] + ["    pass"] * 3
    assert scores(docs[:6], wrong) == [0.0] * 6


def test_a_different_correct_body_passes_and_hostile_code_fails(task):
    doc = next(d for d in task.documents("test") if "max(" in d["answer"] and "min(" in d["answer"])  # clamp
    arg = ast.parse(doc["prompt"]).body[0].args.args[0].arg
    low, high = map(int, re.search(r"from (-?\d+) to (-?\d+)", doc["prompt"]).groups())
    other = f"    if {arg} < {low}:\n        return {low}\n    return {high} if {arg} > {high} else {arg}"
    hostile = "    import os\n    os.system('true')\n    return 0"
    exits = "    import sys\n    sys.exit(0)"
    assert scores([doc] * 4, [other, hostile, exits, doc["answer"] + "\n\nprint('x')\nboom"]) == [1, 0, 0, 1]
    assert process_results(doc, [doc["answer"]]) == {"pass_at_1": 1.0}


def test_documents_are_well_formed_python(task):
    for doc in task.documents("train")[:200] + task.documents("test"):
        assert doc["prompt"].startswith(f"def {doc['entry_point']}(") and doc["prompt"].endswith('"""\n')
        assert doc["answer"].startswith("    ") and not doc["answer"].endswith("\n")
        ast.parse(doc["prompt"] + doc["answer"] + "\n" + doc["tests"])
        tests = doc["tests"].splitlines()
        assert 3 <= len(tests) <= 6 and all(t.startswith(f"assert {doc['entry_point']}(") for t in tests)
        assert len(set(t.split(" == ")[1] for t in tests)) > 1  # a constant body cannot pass
        assert 2 <= doc["prompt"].count(">>> ") <= 3
        assert doc["timeout"] == 5.0


def test_held_out_functions_are_distinct_and_never_in_train(task):
    train = {key(doc) for doc in task.documents("train")}
    val = [key(doc) for doc in task.documents("val")]
    test = [key(doc) for doc in task.documents("test")]
    assert len(set(val)) == 18 and len(set(test)) == 36
    assert not set(val) & train and not set(test) & train and not set(val) & set(test)
    prompts = {doc["prompt"] for doc in task.documents("train")}
    assert not prompts & {doc["prompt"] for doc in task.documents("test")}


def test_templates_are_held_out_alike_and_all_trained(task):
    assert len(TEMPLATES) >= 12 and all(len(template.space) >= 80 for template in TEMPLATES)
    assert Counter(doc["template"] for doc in task.documents("test")) == {t.names[0]: 2 for t in TEMPLATES}
    assert Counter(doc["template"] for doc in task.documents("val")) == {t.names[0]: 1 for t in TEMPLATES}
    assert {doc["template"] for doc in task.documents("train")} == {t.names[0] for t in TEMPLATES}
    assert len({doc["entry_point"] for doc in task.documents("train")}) == sum(len(t.names) for t in TEMPLATES)


def test_splits_and_tokenizer_are_deterministic_by_seed(task):
    again = SyntheticCode(**SMALL)
    for split in ("train", "val", "test"):
        assert again.documents(split) == task.documents(split)
    assert again.tokenizer.to_str() == task.tokenizer.to_str()
    assert SyntheticCode(**{**SMALL, "seed": 3}).documents("test") != task.documents("test")


def test_token_ids_decode_back_to_the_documents(task):
    examples = task.examples("val")
    for row, start, doc in zip(examples.tokens, examples.prompt_len, task.documents("val")):
        assert task.decode(row[:start]) == doc["prompt"]
        assert task.decode(row[start:]).split(EOS)[0] == doc["answer"]
    assert task.vocab_size == 512


def test_answers_fit_the_generation_budget(task):
    longest = max(len(task.tokenizer.encode(doc["answer"]).ids) for doc in task.documents("test"))
    assert longest < task.generation["max_gen_toks"] == 128


def test_program_stops_the_completion_at_a_stop_sequence():
    doc = {"prompt": "def f(x):\n", "tests": "assert f(1) == 2\n"}
    expected = "def f(x):\n    return x + 1\nassert f(1) == 2\n"
    assert SyntheticCode.program(doc, "    return x + 1\ndef g():\n    pass") == expected
    assert SyntheticCode.program(doc, "    return x + 1<eos>junk").startswith("def f(x):\n    return x + 1\n")


def test_not_validated_during_training(task):
    assert not task.validate and task.evaluate(lambda prompts, n: prompts, {}) == {}


@pytest.mark.parametrize("options, message", [
    (dict(num_train=0), "synthetic_code num_train=0 is out of range; allowed: >= 1"),
    (dict(vocab_size=10), "synthetic_code vocab_size=10 is out of range; allowed: >= 259"),
    (dict(timeout=0), "synthetic_code timeout=0 is out of range; allowed: > 0 seconds"),
    (dict(num_test=2000), "synthetic_code num_val \\+ num_test = 2100 is too many"),
    (dict(loss_on="none"), "unknown synthetic_code loss_on 'none'"),
])
def test_bad_options_are_one_line_usage_errors(options, message):
    with pytest.raises(UsageError, match=message) as err:
        SyntheticCode(**options)
    assert "\n" not in str(err.value)
