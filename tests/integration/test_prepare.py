"""`foresight prepare` on real files of this machine (the Python standard library's json package, a JSONL file):
the documents land in the split their hash names, encoded with the tokenizer the folder holds, each ending with the
end-of-document token, saved as `datasets` folders that `datasets` reads back; the manifest counts them; bad input is
one line and leaves nothing that reads as a finished dataset."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import suite.prepare as prepare_module
from suite.cli import main
from suite.errors import UsageError
from suite.prepare import prepare
from tasks.corpus import Rows, read_manifest

STDLIB_JSON = Path(json.__file__).parent  # __init__, decoder, encoder, scanner, tool: five documents


def bucket(text: str, val: float, test: float) -> str:
    """The split a document's hash names, computed here without suite.prepare."""
    u = int(hashlib.sha256(text.encode()).hexdigest()[:16], 16) / 2 ** 64
    return "val" if u < val else "test" if u < val + test else "train"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The json package's five .py files (and a binary file beside them), plus 40 JSONL records with a `body`."""
    folder = tmp_path_factory.mktemp("corpus")
    shutil.copytree(STDLIB_JSON, folder / "json", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "json" / "blob.bin").write_bytes(bytes(range(256)) * 4)
    with open(folder / "notes.jsonl", "w") as file:
        for i in range(40):
            file.write(json.dumps({"body": f"note {i}: " + "the quick brown fox " * (i % 7 + 1), "id": i}) + "\n")
    return folder


def documents(corpus: Path) -> list[str]:
    texts = [path.read_text() for path in sorted((corpus / "json").glob("*.py"))]
    return texts + [json.loads(line)["body"] for line in (corpus / "notes.jsonl").read_text().splitlines()]


def saved_documents(folder: Path) -> list[tuple[int, ...]]:
    """A saved split's documents as `datasets` itself reads them, sorted."""
    import datasets

    return sorted(tuple(ids) for ids in datasets.load_from_disk(str(folder))["ids"])


def test_documents_are_split_by_hash_encoded_with_the_folders_tokenizer_and_read_back(corpus, tmp_path, capsys):
    from tokenizers import Tokenizer

    out = tmp_path / "ds"
    main(["prepare", str(corpus / "json"), str(corpus / "notes.jsonl"), "--out", str(out), "--field", "body",
          "--vocab_size", "400", "--val_fraction", "0.2", "--test_fraction", "0.2", "--workers", "1"])
    said = capsys.readouterr().out
    manifest = read_manifest(out)
    assert manifest["skipped_files"] == 1 and "1 files skipped" in said  # blob.bin
    assert manifest["command"].startswith("foresight prepare ") and manifest["dtype"] == "uint16"
    assert {Path(r["path"]).name for r in manifest["sources"]} >= {"decoder.py", "notes.jsonl"}
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    eos = manifest["tokenizer"]["eos_id"]
    assert tokenizer.get_vocab_size() == 400 and tokenizer.id_to_token(eos) == "<eos>"
    expected = {"train": [], "val": [], "test": []}
    for text in documents(corpus):
        expected[bucket(text, 0.2, 0.2)].append(tuple(tokenizer.encode(text, add_special_tokens=False).ids) + (eos,))
    for name, docs in expected.items():
        assert docs, name  # every split has documents at these fractions
        assert manifest["splits"][name]["documents"] == len(docs)
        assert manifest["splits"][name]["tokens"] == sum(map(len, docs))
        assert saved_documents(out / name) == sorted(docs)  # every document whole, one a row
        rows = Rows(str(out / name), 1)  # what training reads: the documents end to end, in the saved order
        assert [int(rows[i]) for i in range(len(rows))] == [t for ids in datasets_order(out / name) for t in ids]


def datasets_order(folder: Path) -> list[list[int]]:
    import datasets

    return datasets.load_from_disk(str(folder))["ids"]


def test_an_existing_dataset_is_kept_unless_overwrite_and_a_failed_prepare_leaves_nothing(corpus, tmp_path,
                                                                                           monkeypatch):
    out = tmp_path / "ds"
    common = dict(vocab_size=300, field="body", val_fraction=0.2, test_fraction=0.2, workers=1)
    prepare([str(corpus / "notes.jsonl")], out, **common)
    before = (out / "foresight.json").read_bytes()
    with pytest.raises(UsageError, match="already holds a prepared dataset; allowed: a new or empty folder, or "
                                         "--overwrite"):
        prepare([str(corpus / "notes.jsonl")], out, **common)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "write_split", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(corpus / "notes.jsonl")], out, **{**common, "vocab_size": 320}, overwrite=True)
    assert (out / "foresight.json").read_bytes() == before  # the old dataset, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no partial folder left
    with pytest.raises(KeyboardInterrupt):
        prepare([str(corpus / "notes.jsonl")], tmp_path / "new", **common)
    with pytest.raises(UsageError, match="has no foresight.json"):
        read_manifest(tmp_path / "new")


@pytest.mark.parametrize("make, args, message", [
    (None, ["missing/*.txt"], "source 'missing/*.txt' does not exist; allowed: a file, a folder or a glob"),
    ("empty", ["empty"], "hold no documents; allowed: sources with at least one text document"),
    ("bad.jsonl", ["bad.jsonl"], "source file 'bad.jsonl' cannot be read as json ("),
    ("notes.jsonl", ["notes.jsonl", "--field", "content"], "source 'notes.jsonl' has no field 'content' (its "
                                                           "fields: body); allowed: --field NAME"),
    ("notes.jsonl", ["notes.jsonl", "--field", "body", "--vocab_size", "10"], "--vocab_size=10 is out of range; "
                                                                              "allowed: in [259, "),
    ("blob.bin", ["blob.bin", "--bad", "fail"], "source file 'blob.bin' is not UTF-8 text; allowed: text files, or "
                                                "--bad=skip"),
    ("notes.jsonl", ["notes.jsonl", "--field", "body", "--val_fraction", "0.9"], "--val_fraction=0.9 is out of "
                                                                                 "range; allowed: in [0.0, 0.5]"),
])
def test_bad_input_is_one_line_and_writes_nothing(make, args, message, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    if make == "empty":
        (tmp_path / "empty").mkdir()
    elif make == "bad.jsonl":
        (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    elif make == "notes.jsonl":
        (tmp_path / "notes.jsonl").write_text("".join(json.dumps({"body": f"doc {i} " * 20}) + "\n"
                                                      for i in range(30)))
    elif make == "blob.bin":
        (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00" * 100)
    before = sorted(p.name for p in tmp_path.iterdir())
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit:
        main(["prepare", *args, "--out", "ds"])
    lines = capfd.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and len(lines) == 1 and message in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_prepare_whose_workers_fail_writes_no_dataset(corpus, tmp_path, monkeypatch):
    """An encoding worker that fails (here on one document) fails the prepare with its error, and leaves nothing."""
    def broken(batch, tokenizer_file, eos_id):
        if any("note 3:" in text for text in batch["text"]):
            raise ValueError("a worker failed on note 3")
        return encode(batch, tokenizer_file, eos_id)

    encode = prepare_module.encode_batch
    monkeypatch.setattr(prepare_module, "encode_batch", broken)
    monkeypatch.setattr(prepare_module, "IN_PROCESS_BYTES", 0)  # through map's worker processes
    with pytest.raises(Exception, match="a worker failed on note 3"):
        prepare([str(corpus / "notes.jsonl")], tmp_path / "ds", vocab_size=300, field="body", val_fraction=0.2,
                test_fraction=0.2, workers=2)
    assert list(tmp_path.iterdir()) == []


def test_a_split_encoded_in_process_holds_the_documents_the_workers_encode(corpus, tmp_path, monkeypatch):
    """Small splits are encoded in this process, large ones by map's worker processes: the same documents' token
    ids either way, and no cache file is left behind."""
    common = dict(vocab_size=300, field="body", val_fraction=0.2, test_fraction=0.2, workers=2)
    prepare([str(corpus / "notes.jsonl")], tmp_path / "in_process", **common)
    monkeypatch.setattr(prepare_module, "IN_PROCESS_BYTES", 0)
    prepare([str(corpus / "notes.jsonl")], tmp_path / "workers", **common, tokenizer=str(tmp_path / "in_process"))
    for split in ("train", "val", "test"):
        assert saved_documents(tmp_path / "in_process" / split) == saved_documents(tmp_path / "workers" / split)
    assert not (tmp_path / "in_process" / "work").exists() and not (tmp_path / "workers" / "work").exists()


def test_rows_are_the_documents_end_to_end_across_arrow_files_and_chunks(tmp_path):
    """A split saved as several Arrow files (shards) and record batches: row i is the tokens [i * L, (i + 1) * L) of
    the documents laid end to end, whichever files and chunks it spans; the tail shorter than a row is left out."""
    import datasets
    import numpy as np

    documents = [[int(x) for x in np.arange(n) + 100 * n] for n in (5, 3, 11, 1, 8, 2, 9)]  # 39 tokens
    parts = [datasets.Dataset.from_dict({"ids": documents[a:b]}) for a, b in ((0, 2), (2, 5), (5, 7))]
    datasets.concatenate_datasets(parts).save_to_disk(str(tmp_path / "split"), num_shards=3)
    flat = [token for ids in documents for token in ids]
    for length in (1, 4, 7, 13):
        rows = Rows(str(tmp_path / "split"), length)
        assert len(rows) == len(flat) // length
        assert [rows[i].tolist() for i in range(len(rows))] == [flat[i * length:(i + 1) * length]
                                                                for i in range(len(flat) // length)]
    with pytest.raises(IndexError):
        Rows(str(tmp_path / "split"), 13)[3]
