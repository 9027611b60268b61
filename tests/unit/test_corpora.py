"""HumanEval's data, the standard-library corpus, the mixture, and how documents become token rows."""

import pytest

import tasks
from suite.errors import UsageError
from tasks import EOS, HumanEval, Mix, PythonStdlib, encode_documents
from tasks.base import pack_documents
from tasks.python_stdlib import chunks, stdlib_files
from tasks.tokenizer import word_level

WORDS = word_level(["a", "b", "c", "Q", "A"])  # ids: <pad> 0, <unk> 1, <eos> 2, a 3, b 4, c 5, Q 6, A 7


def test_encode_documents_by_hand():
    docs = [{"prompt": "Q a", "answer": "b c"}, {"text": "a a a b"}]
    examples = encode_documents(docs, WORDS)
    assert examples.tokens.tolist() == [[6, 3, 4, 5, 2], [3, 3, 3, 4, 2]]
    assert examples.loss_mask.tolist() == [[False, False, True, True, True], [True] * 5]
    assert examples.prompt_len.tolist() == [2, 5]
    assert encode_documents(docs, WORDS, loss_on="all").loss_mask[0].tolist() == [True] * 5


def test_pack_documents_by_hand():
    docs = [{"prompt": "Q a", "answer": "b"}, {"text": "c c"}, {"prompt": "Q", "answer": "a"}]
    packed = pack_documents(docs, WORDS, seq_len=4)
    # 6 3 4 2 | 5 5 2 6 | 3 2 then padding
    assert packed.tokens.tolist() == [[6, 3, 4, 2], [5, 5, 2, 6], [3, 2, 0, 0]]
    assert packed.loss_mask.tolist() == [[False, False, True, True], [True, True, True, False],
                                         [True, True, False, False]]
    assert packed.prompt_len.tolist() == [4, 4, 4]


def test_humaneval_is_the_packages_164_problems():
    task = HumanEval()
    test = task.documents("test")
    assert len(test) == 164 and task.documents("train") == []
    assert test[0]["task_id"] == "HumanEval/0" and test[0]["entry_point"] == "has_close_elements"
    program = HumanEval.program(test[0], test[0]["answer"])
    assert program.startswith(test[0]["prompt"]) and program.rstrip().endswith("check(has_close_elements)")
    with pytest.raises(UsageError, match="humaneval is evaluation only"):
        task.vocab_size


def test_humaneval_scores_by_running_the_tests():
    doc = HumanEval().documents("test")[0]
    assert HumanEval.score(doc, doc["answer"]) == {"pass_at_1": 1.0}
    assert HumanEval.score(doc, "    return False\n") == {"pass_at_1": 0.0}
    from tasks.humaneval import process_results

    samples = [doc["answer"], "    return False\n", doc["answer"], "    return True\n"]
    scores = process_results(doc, samples)
    assert scores["pass_at_1"] == pytest.approx(0.5)  # 2 of 4 correct
    assert set(scores) == {"pass_at_1"}  # pass@5 needs at least 5 samples


def test_stdlib_chunks_by_hand():
    source = "a = 1\n\nb = 2\n\n" + "c = 3\n" * 5
    assert chunks(source, 12) == ["a = 1\n\nb = 2", "c = 3\nc = 3", "c = 3\nc = 3", "c = 3\n"]
    assert chunks("x\n\n" + "y = 1\n" * 4, 14) == ["x", "y = 1\ny = 1", "y = 1\ny = 1\n"]
    assert "".join(chunks("x = 1\n\ny = 2", 1000)) == "x = 1\n\ny = 2"


@pytest.fixture(scope="module")
def stdlib():
    return PythonStdlib(max_files=40, seq_len=64, vocab_size=400)


def test_stdlib_splits_by_file_and_held_out_code_is_never_trained(stdlib):
    splits = {path: stdlib.split_of(path) for path in stdlib.files}
    assert set(splits.values()) == {"train", "val", "test"} or len(stdlib.files) < 40
    train_text = "".join(doc["text"] for doc in stdlib.documents("train"))
    for doc in stdlib.documents("test"):
        assert doc["text"] not in train_text
    assert len(stdlib_files()) > 300  # the machine's standard library, not a stub


def test_stdlib_packs_rows_of_seq_len(stdlib):
    rows = stdlib.examples("train")
    assert rows.tokens.shape[1] == 64 and rows.loss_mask[:-1].all()
    text = stdlib.decode(rows.tokens[0])
    assert text in "".join(doc["text"] + EOS for doc in stdlib.documents("train"))


@pytest.fixture(scope="module")
def mix():
    small = {"num_train": 400, "num_val": 20, "num_test": 20}
    return Mix(components={"star_graph": 1.0, "countdown": 1.0, "biographies": 0.5, "python_stdlib": 2.0},
               options={"star_graph": small, "countdown": small, "biographies": {"num_people": 60, "num_val": 10},
                        "python_stdlib": {"max_files": 30}},
               train_tokens=60_000, seq_len=128, vocab_size=600)


def test_mix_shares_one_tokenizer_and_splits_tokens_by_weight(mix):
    token_count = {name: 0 for name in mix.components}
    for doc in mix.documents("train"):
        text = doc.get("prompt", "") + doc.get("answer", doc.get("text", ""))
        token_count[doc["task"]] += len(mix.tokenizer.encode(text).ids) + 1
    total = sum(token_count.values())
    assert total >= 60_000
    for name, weight in mix.components.items():
        assert token_count[name] / total == pytest.approx(weight / 4.5, abs=0.03), name
    assert mix.examples("train").tokens.shape[1] == 128


def test_mix_held_out_splits_are_its_components(mix):
    expected = sum(len(task.documents("test")) for task in mix.tasks.values())
    assert len(mix.documents("test")) == expected
    first = mix.tasks["star_graph"].documents("test")[0]
    assert {**first, "task": "star_graph"} in mix.documents("test")


def test_mix_bad_options():
    with pytest.raises(UsageError, match="mix options name \\['chess'\\]"):
        Mix(components={"star_graph": 1.0}, options={"chess": {}})
    with pytest.raises(UsageError, match="positive total weight"):
        Mix(components={"star_graph": 0.0})
    with pytest.raises(UsageError, match="mix component 'humaneval' has no training data"):
        Mix(components={"humaneval": 1.0})
    with pytest.raises(UsageError, match="unknown task 'chess'"):
        tasks.build("mix", components={"chess": 1.0})


def test_every_registered_task_has_an_lm_eval_template():
    from pathlib import Path

    import yaml

    folder = Path(tasks.__file__).parent
    for name, cls in tasks.TASKS.items():
        if cls.family is None and name != "python_stdlib":
            continue
        config = yaml.safe_load((folder / f"{name}.yaml").read_text().replace("!function", ""))
        assert config["task"] == name and config["dataset_path"] == "json"
