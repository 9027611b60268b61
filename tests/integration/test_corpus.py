"""The `corpus` task on a folder `foresight prepare` wrote from real files: any objective trains on it through the
CLI, read row by row from its memory-mapped token ids; the separator of its documents reaches the objective; a stopped run continues with the
rows an uninterrupted one would have taken; bad folders are one line."""

import json
import shutil
from pathlib import Path

import pytest


import torch  # noqa: E402

from suite.cli import main  # noqa: E402
from suite.errors import UsageError  # noqa: E402
from suite.prepare import prepare  # noqa: E402


@pytest.fixture
def prepared(prepared_corpus) -> Path:
    return prepared_corpus


def fit(prepared: Path, root: Path, steps: int, *extra: str) -> list[str]:
    log = root.with_suffix(".log")
    main(["fit", "--data.task=corpus", f"--data.options.path={prepared}", "--data.options.seq_len=32",
          "--data.batch_size=4", "--model.objective=parallel_mtp", "--model.objective.n=2",
          f"--trainer.max_steps={steps}", f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
          "--trainer.logger=false", "--trainer.callbacks+=tests.integration.batch_log.BatchLog",
          f"--trainer.callbacks.path={log}", *extra])
    return log.read_text().split()


def test_an_objective_trains_on_the_corpus_and_a_stopped_run_continues_with_the_uninterrupted_rows(prepared,
                                                                                                    tmp_path):
    whole = fit(prepared, tmp_path / "whole", 12)
    assert len(whole) == 12 and len(set(whole)) == 12
    fit(prepared, tmp_path / "split", 5)
    assert fit(prepared, tmp_path / "split", 12, "--ckpt_path=last") == whole
    checkpoint = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 12 and checkpoint["datamodule_hyper_parameters"]["task"] == "corpus"


def test_the_documents_separator_reaches_the_objective(prepared):
    from suite import ObjectiveLM, TaskData

    data = TaskData(task="corpus", options={"path": str(prepared), "seq_len": 32}, batch_size=4)
    model = ObjectiveLM("nano", objective=__import__("objectives").build("parallel_mtp", n=2),
                        vocab_size=data.vocab_size)
    model.check_data(data)
    eos = json.loads((prepared / "foresight.json").read_text())["tokenizer"]["eos_id"]
    assert model.objective.separator == eos == data.task.tokenizer.token_to_id("<eos>")
    batch = next(iter(data.train_dataloader()))
    assert batch["tokens"].shape == (4, 32) and batch["tokens"].dtype == torch.long and batch["loss_mask"].all()


@pytest.mark.parametrize("options, message", [
    ({}, "corpus path is missing; allowed: a folder `foresight prepare` wrote (fit's --data.options.path=DIR, or "
         "data: {options: {path: DIR}} in a sweep file)"),
    ({"path": "nowhere"}, "corpus path 'nowhere' has no foresight.json (not a finished `foresight prepare` "
                          "folder)"),
    ({"seq_len": 10 ** 7}, "corpus seq_len=10000000 is longer than the "),
])
def test_bad_corpus_options_are_one_line(options, message, prepared):
    import tasks

    options = {"path": str(prepared), **options} if "path" not in options and options else options
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tasks.build("corpus", **options)


def test_the_test_documents_are_scored_through_lm_eval_with_each_documents_bits_per_byte(prepared, tmp_path):
    from suite.evaluate import evaluate

    fit(prepared, tmp_path / "run", 3)
    report = evaluate(str(tmp_path / "run/checkpoints/last.ckpt"), ["corpus"], tmp_path / "eval", items=True)
    aggregate = report["results"]["corpus"]["bits_per_byte,none"]
    texts = [json.loads(line)["text"] for line in (prepared / "test.jsonl").read_text().splitlines()]
    items = report["items"]["corpus"]
    assert len(items) == len(texts) == json.loads((prepared / "foresight.json").read_text())["splits"]["test"][
        "documents"]
    # lm-eval's bits per byte pools documents by their bytes: each document's own, weighted by its bytes, gives it
    sizes = [len(text.encode("utf-8")) for text in texts]
    assert sum(b * n for b, n in zip(items, sizes)) / sum(sizes) == pytest.approx(aggregate, rel=1e-9)
    assert report["untrained_tasks"] == [] and report["trained_on"] == ["corpus"]


def test_scoring_a_corpus_prepared_again_with_another_tokenizer_is_refused(prepared, tmp_path):
    from suite.evaluate import evaluate

    folder = tmp_path / "ds"
    shutil.copytree(prepared, folder)
    fit(folder, tmp_path / "run", 2)
    sources = [source["path"] for source in json.loads((folder / "foresight.json").read_text())["sources"]]
    prepare(sources, folder, vocab_size=320, val_fraction=0.2, test_fraction=0.1, workers=1, overwrite=True)
    with pytest.raises(UsageError, match=f"corpus '{folder}' has another tokenizer than the checkpoint's .*; allowed: "
                                         "the prepared folder the checkpoint was trained on"):
        evaluate(str(tmp_path / "run/checkpoints/last.ckpt"), ["corpus"], tmp_path / "eval")


def test_a_corpus_is_a_mix_component_whose_documents_are_the_sources_text(prepared):
    """In a mix the corpus's training documents are decoded from their tokens: with the held-out ones they are
    exactly the texts of the source files and JSONL records, each once."""
    import tasks
    from tests.conftest import STAR_17

    folder = prepared.parent
    sources = {path.read_text() for path in (folder / "json").glob("*.py")}
    sources |= {json.loads(line)["text"] for line in (folder / "notes.jsonl").read_text().splitlines()}
    mix = tasks.build("mix", components={"star_graph": 1.0, "corpus": 1.0}, train_tokens=4000, seq_len=64,
                      vocab_size=300, tokenizer_chars=20000, options={"star_graph": STAR_17, "corpus": {
                          "path": str(prepared)}})
    corpus = mix.tasks["corpus"]
    documents = [doc["text"] for split in ("train", "val", "test") for doc in corpus.documents(split)]
    assert sorted(documents) == sorted(sources)
    train = [doc for doc in mix.documents("train") if doc["task"] == "corpus"]
    assert train and all(doc["text"] in sources for doc in train)
    assert {doc["task"] for doc in mix.documents("test")} == {"star_graph", "corpus"}
    assert mix.document_separator == mix.tokenizer.token_to_id("<eos>")
