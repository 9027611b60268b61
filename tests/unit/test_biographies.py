import re
from collections import Counter

import pytest
import torch
from suite.errors import UsageError, parse_options
from tasks.base import EOS
from tasks.biographies import ATTRIBUTES, Biographies
from tests.conftest import oracle, validation_batch

SMALL = dict(num_people=60, exposures=[1, 3, 6], qa_fraction=0.5, num_val=40, seed=5, vocab_size=600)


@pytest.fixture(scope="module")
def task() -> Biographies:
    return Biographies(**SMALL)


def paragraphs(task) -> list[str]:
    return [doc["text"] for doc in task.documents("train") if "text" in doc]


def test_exposure_counts_are_exact(task):
    texts = paragraphs(task)
    for person in task.people:
        mentions = sum(bool(re.search(rf"\b{person.name}\b", text)) for text in texts)
        assert mentions == person.exposure, person.name
    assert len(texts) == 20 * (1 + 3 + 6)
    assert Counter(person.exposure for person in task.people) == {1: 20, 3: 20, 6: 20}


def test_every_paragraph_states_all_five_attributes_of_one_person(task):
    by_name = {person.name: person for person in task.people}
    for text in paragraphs(task)[:100]:
        named = {name for name in by_name if name in text}
        assert len(named) == 1
        person = by_name[named.pop()]
        assert all(value in text for value in person.attributes.values())
        assert text.count(person.name) == len(ATTRIBUTES)


def test_paraphrases_vary(task):
    openings = Counter(text.split(". ")[0].replace(text.split()[0] + " " + text.split()[1], "")
                       for text in paragraphs(task))
    assert len(openings) >= 15


def test_qa_people_and_held_out_people(task):
    names = [person.name for person in task.people]
    assert len(set(names)) == 60
    trained = [p for p in task.people if p.qa_in_training]
    assert len(trained) == 30 and Counter(p.exposure for p in trained) == {1: 10, 3: 10, 6: 10}
    questions = [doc for doc in task.documents("train") if "prompt" in doc]
    assert len(questions) == 30 * len(ATTRIBUTES)
    held_out = task.documents("val") + task.documents("test")
    assert len(held_out) == 30 * len(ATTRIBUTES) and len(task.documents("val")) == 40
    by_name = {person.name: person for person in task.people}
    for doc in held_out:
        person = next(p for name, p in by_name.items() if name in doc["prompt"])
        assert not person.qa_in_training
        assert doc["exposure"] == person.exposure and doc["answer"] == " " + person.attributes[doc["attribute"]]


def test_no_eval_question_appears_in_the_training_text(task):
    training_text = "\n".join(doc.get("text") or doc["prompt"] + doc["answer"] for doc in task.documents("train"))
    for doc in task.documents("val") + task.documents("test"):
        assert doc["prompt"] not in training_text
        question = doc["prompt"].split("\n")[0]
        assert question not in training_text
    assert "Q: " in training_text  # the trained questions are there


def test_splits_and_tokenizer_are_deterministic_by_seed(task):
    again = Biographies(**SMALL)
    for split in ("train", "val", "test"):
        assert again.documents(split) == task.documents(split)
    assert again.tokenizer.to_str() == task.tokenizer.to_str()
    other = Biographies(**{**SMALL, "seed": 6})
    assert other.documents("test") != task.documents("test")
    assert task.vocab_size == 600


def test_score_by_hand():
    doc = {"prompt": "Q: Where was Ada Novak born?\nA:", "answer": " Lisbon", "exposure": 4}
    assert Biographies.score(doc, " Lisbon") == {"acc": 1.0, "acc_4x": 1.0}
    assert Biographies.score(doc, "  lisbon \nQ: Where was") == {"acc": 1.0, "acc_4x": 1.0}
    assert Biographies.score(doc, " Lisbon<eos>Oslo") == {"acc": 1.0, "acc_4x": 1.0}
    assert Biographies.score(doc, " Oslo") == {"acc": 0.0, "acc_4x": 0.0}
    assert Biographies.score(doc, " Lisbon, Portugal") == {"acc": 0.0, "acc_4x": 0.0}
    assert Biographies.score(doc, "\n Lisbon") == {"acc": 0.0, "acc_4x": 0.0}
    assert Biographies.score(doc, "") == {"acc": 0.0, "acc_4x": 0.0}
    rebuilt = {"prompt": doc["prompt"], "answer": doc["answer"]}  # as training-time validation rebuilds it
    assert Biographies.score(rebuilt, " Lisbon") == {"acc": 1.0}


def test_metrics_name_every_exposure_level(task):
    assert task.metrics == ["acc", "acc_1x", "acc_3x", "acc_6x"]
    assert Biographies(num_people=30, num_val=5, vocab_size=300).metrics == ["acc", "acc_1x", "acc_4x", "acc_16x"]
    keys = {key for doc in task.documents("test") for key in task.score(doc, doc["answer"])}
    assert keys == set(task.metrics)


def test_token_ids_decode_back_to_the_documents(task):
    for split in ("train", "val"):
        examples = task.examples(split)
        for row, start, doc in zip(examples.tokens, examples.prompt_len, task.documents(split)):
            if "text" in doc:  # plain text: no prompt, its "prompt length" is all of it
                assert task.decode(row[:start]) == doc["text"] + EOS
            else:
                assert task.decode(row[:start]) == doc["prompt"]
                assert task.decode(row[start:]).split(EOS)[0] == doc["answer"]


def test_answers_fit_the_generation_budget_of_any_byte_level_tokenizer(task):
    assert task.generation["max_gen_toks"] == 27  # " Seoul National University" has 26 bytes, then <eos>
    for doc in task.documents("test"):
        assert len(doc["answer"].encode()) < task.generation["max_gen_toks"]


def test_evaluate_scores_an_oracle_one_and_garbage_zero(task):
    batch = validation_batch(task, 40)
    assert batch["prompt_len"].unique().numel() > 1  # several prompt lengths, answered one length at a time
    assert task.evaluate(oracle(batch), batch)["acc"].tolist() == [1.0] * 40
    letter = task.token_id("x")
    scores = task.evaluate(lambda prompts, n: torch.full((len(prompts), n), letter), batch)
    assert list(scores) == ["acc"] and scores["acc"].tolist() == [0.0] * 40


@pytest.mark.parametrize("options, message", [
    (dict(num_people=0), "biographies num_people=0 is out of range; allowed: in \\[1, 2500\\]"),
    (dict(exposures=[]), "biographies exposures=\\[\\] is not allowed"),
    (dict(exposures=[1, 1]), "biographies exposures=\\[1, 1\\] is not allowed"),
    (dict(exposures=[-1, 2]), "biographies exposures=\\[-1, 2\\] is not allowed"),
    (dict(qa_fraction=1.0), "qa_fraction=1.0 leaves no held-out person"),
    (dict(num_people=2, num_val=1), "num_people=2 with qa_fraction=0.5 leaves no held-out person"),
    (dict(num_val=0), "biographies num_val=0 is out of range; allowed: >= 1"),
    (dict(num_val=1005), "biographies num_val=1005 leaves no test question"),
    (dict(vocab_size=100), "biographies vocab_size=100 is out of range; allowed: >= 259"),
    (dict(loss_on="prompt"), "loss_on"),
])
def test_bad_options_are_one_line_usage_errors(options, message):
    with pytest.raises(UsageError, match=message) as err:
        Biographies(**options)
    assert "\n" not in str(err.value)


def test_options_parse_from_the_command_line_form():
    parsed = parse_options("task biographies", Biographies, {"exposures": "[2, 8]", "num_people": "40"})
    assert parsed["exposures"] == [2, 8] and parsed["num_people"] == 40
