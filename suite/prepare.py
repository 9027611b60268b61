"""`foresight prepare SOURCE... --out DIR`: the user's documents as a tokenized, chunked, streamable dataset folder.

Sources are read with Hugging Face `datasets`, from local files only: a text file, a folder or a glob of them (one
document a file), `.jsonl`/`.json`/`.parquet`/`.csv` files with a text field, or a folder written by
`Dataset.save_to_disk`. Each document goes to train, val or test by a hash of its text (stable when documents are
added), is encoded with a byte-level BPE trained on the training documents with `tokenizers` (or the user's
`tokenizer.json`), ends with the end-of-document token, and is saved as a `datasets` folder of token ids (uint16
where the vocabulary allows; `Dataset.map` encodes in worker processes, `save_to_disk` writes Arrow), which training
reads memory-mapped, row by row (`tasks.corpus.Rows`).

DIR holds `tokenizer.json`, `train/`, `val/`, `test/` (each a `save_to_disk` folder: Arrow files and their
metadata), the held-out documents' text as `val.jsonl` and `test.jsonl` (what `foresight eval --tasks corpus`
scores) and `foresight.json`, the manifest: sources with sizes and hashes, the tokenizer, documents and tokens per split, the command and commit.
Everything is written into a sibling folder first and renamed to DIR once the manifest is in it, so a prepare that
is killed leaves no folder that reads as a finished dataset, and an --overwrite keeps the old dataset until the
new one is whole."""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from suite.errors import UsageError, check_range, check_writable
from tasks.corpus import FORMAT, MANIFEST

TABLE_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
SPLITS = ("train", "val", "test")
HELD_OUT = ("val", "test")


def split_of(text: str, val_fraction: float, test_fraction: float) -> str:
    """val, test or train from the first 8 bytes of the text's SHA-256 as a number in [0, 1)."""
    u = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big") / 2 ** 64
    return "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"


def file_record(path: Path) -> dict:
    data = path.read_bytes()
    return {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def expand(source: str) -> list[Path]:
    """The files a SOURCE names: itself, a folder's files (recursively, hidden ones left out), or a glob's."""
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(path).parts))
    matches = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
    if not matches:
        raise UsageError(f"source {source!r} does not exist; allowed: a file, a folder or a glob of text files, "
                         ".jsonl/.json/.parquet/.csv files, or a folder written by Dataset.save_to_disk")
    return matches


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def read_sources(sources: list[str], field: str, bad: str):
    """(one `datasets.Dataset` with a "text" column, the source records, how many files were skipped as not text)."""
    import datasets

    from tqdm import tqdm

    datasets.disable_progress_bars()
    parts, records, text_files, skipped = [], [], [], 0
    files = {source: None if is_saved_dataset(Path(source)) else expand(source) for source in sources}
    total = sum(path.stat().st_size for paths in files.values() for path in paths or ())
    # on a terminal: bytes read (MB/s) and documents found; datasets' own bar follows for the encoding
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="read", disable=None, leave=False)
    for source, paths in files.items():
        if paths is None:
            saved = datasets.load_from_disk(source)
            parts.append(column(saved, field, source))
            records.append({"path": source, "documents": len(saved), "kind": "save_to_disk"})
            continue
        for path in paths:
            record = file_record(path)
            bar.update(record["bytes"])
            kind = TABLE_SUFFIXES.get(path.suffix.lower())
            if kind is not None:
                parts.append(column(read_table(path, kind), field, str(path)))
                records.append({**record, "documents": len(parts[-1]), "kind": kind})
            elif is_text(path):
                text_files.append(path)
                records.append({**record, "documents": 1, "kind": "text"})
            elif bad == "fail":
                raise UsageError(f"source file '{path}' is not UTF-8 text; allowed: text files, or --bad=skip to "
                                 "leave such files out (they are counted)")
            else:
                skipped += 1
            bar.set_postfix(documents=len(text_files) + sum(len(part) for part in parts), refresh=False)
    bar.close()
    if text_files:  # one document a file, read by datasets' own text builder
        parts.append(datasets.load_dataset("text", data_files=[str(p) for p in text_files], sample_by="document",
                                           split="train", keep_in_memory=False))
    if not parts or sum(len(part) for part in parts) == 0:
        raise UsageError(f"sources {sources} hold no documents{f' ({skipped} files not text)' if skipped else ''}; "
                         "allowed: sources with at least one text document")
    return datasets.concatenate_datasets(parts), records, skipped


def is_text(path: Path) -> bool:
    data = path.read_bytes()
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_table(path: Path, kind: str):
    import logging

    import datasets

    quiet = logging.getLogger("datasets")
    level, quiet.level = quiet.level, logging.CRITICAL  # datasets logs the parse error with its traceback first
    try:
        return datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as err:  # datasets wraps arrow's parse errors; the file and the reason are what the user needs
        cause = err.__cause__ or err
        reason = (str(cause).splitlines() or [type(cause).__name__])[0][:200]
        raise UsageError(f"source file '{path}' cannot be read as {kind} ({type(cause).__name__}: {reason}); "
                         f"allowed: well-formed {kind} records") from None
    finally:
        quiet.setLevel(level)


def column(dataset, field: str, source: str):
    if field not in dataset.column_names:
        raise UsageError(f"source {source!r} has no field {field!r} (its fields: "
                         f"{', '.join(dataset.column_names) or 'none'}); allowed: --field NAME of a text field")
    dropped = dataset.select_columns([field])
    return dropped.rename_column(field, "text") if field != "text" else dropped


def build_tokenizer(train, vocab_size: int | None, tokenizer_dir: str | None):
    """The tokenizer and its end-of-document id: the user's tokenizer.json, or a byte-level BPE trained on `train`."""
    from tokenizers import Tokenizer

    from tasks.base import EOS
    from tasks.tokenizer import byte_level_bpe

    if tokenizer_dir is not None:
        path = Path(tokenizer_dir) / "tokenizer.json"
        if not path.is_file():
            raise UsageError(f"--tokenizer {tokenizer_dir!r} has no tokenizer.json; allowed: a Hugging Face "
                             "tokenizer folder (tokenizers' tokenizer.json)")
        tokenizer = Tokenizer.from_file(str(path))
        config = Path(tokenizer_dir) / "tokenizer_config.json"
        eos = json.loads(config.read_text()).get("eos_token") if config.is_file() else None
        eos = eos.get("content") if isinstance(eos, dict) else eos
        eos_id = tokenizer.token_to_id(EOS if tokenizer.token_to_id(EOS) is not None else str(eos))
        if eos_id is None:
            raise UsageError(f"--tokenizer {tokenizer_dir!r} has no end-of-document token ({EOS} or "
                             "tokenizer_config.json's eos_token); allowed: a tokenizer with one")
        return tokenizer, eos_id
    texts = (batch["text"] for batch in train.iter(batch_size=1000))
    tokenizer = byte_level_bpe((text for batch in texts for text in batch), vocab_size)
    return tokenizer, tokenizer.token_to_id(EOS)


@functools.cache
def _tokenizer(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def encode_batch(batch: dict, tokenizer_file: str, eos_id: int) -> dict:
    """Dataset.map's function: each document's token ids, ending with the end-of-document token (in map's worker
    processes too, each loading the tokenizer once)."""
    encodings = _tokenizer(tokenizer_file).encode_batch(batch["text"], add_special_tokens=False)
    return {"ids": [[*encoding.ids, eos_id] for encoding in encodings]}


IN_PROCESS_BYTES = 32_000_000
"""A split of less text is encoded in this process (tokenizers' batch encoding is itself parallel, and worker
processes take seconds to start, most of a small corpus's time); a larger one by `workers` processes."""


def write_split(split, folder: Path, work: Path, tokenizer_file: Path, eos_id: int, dtype: str, workers: int,
                text_bytes: float) -> dict:
    """One split as a `datasets` folder with one row per document, its token ids ("ids", ending with `eos_id`);
    its documents, tokens and bytes on disk."""
    import datasets
    import pyarrow.compute as pc

    features = datasets.Features({"ids": datasets.Sequence(datasets.Value(dtype))})
    encoded = split.map(encode_batch, batched=True, batch_size=1000, remove_columns=split.column_names,
                        features=features, fn_kwargs={"tokenizer_file": str(tokenizer_file), "eos_id": eos_id},
                        num_proc=workers if text_bytes >= IN_PROCESS_BYTES and workers > 1 else None,
                        cache_file_name=str(work / f"{folder.name}.arrow"), desc=f"encode {folder.name}")
    encoded.save_to_disk(str(folder))
    lengths = pc.list_value_length(encoded.data.table.column("ids"))
    return {"documents": len(encoded), "tokens": int(pc.sum(lengths).as_py() or 0),
            "bytes": sum(path.stat().st_size for path in folder.glob("*.arrow"))}


def check_out(out: Path, overwrite: bool) -> None:
    check_writable("--out", out.parent)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' is a file; allowed: a new folder, or a prepared dataset with --overwrite")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "a prepared dataset" if (out / MANIFEST).is_file() else "files"
        raise UsageError(f"--out '{out}' already holds {what}; allowed: a new or empty folder, or --overwrite to "
                         "replace it (the old one is kept until the new one is finished)")


def prepare(sources: list[str], out: str | Path, vocab_size: int | None = 4096, tokenizer: str | None = None,
            field: str = "text", val_fraction: float = 0.01, test_fraction: float = 0.01, bad: str = "skip",
            overwrite: bool = False, workers: int | None = None, origin: dict | None = None) -> dict:
    """Write the dataset folder `out` and return its manifest."""
    from suite.errors import check_choice

    out = Path(out)
    check_choice("--bad", bad, ("skip", "fail"))
    check_range("--val_fraction", val_fraction, 0.0, 0.5)
    check_range("--test_fraction", test_fraction, 0.0, 0.5)
    if tokenizer is None:
        from tasks.tokenizer import MIN_BPE_VOCAB

        check_range("--vocab_size", vocab_size, MIN_BPE_VOCAB, 2 ** 32 - 1)
    check_out(out, overwrite)
    started = clock = time.perf_counter()
    stages = {}

    def stage(name: str) -> None:  # where the time goes, in the manifest
        nonlocal clock
        stages[name], clock = time.perf_counter() - clock, time.perf_counter()

    corpus, records, skipped = read_sources(sources, field, bad)
    names = corpus.map(lambda batch: {"split": [split_of(text, val_fraction, test_fraction)
                                                 for text in batch["text"]]}, batched=True)
    splits = {name: names.filter(lambda batch: [s == name for s in batch["split"]], batched=True)
              .remove_columns("split") for name in SPLITS}
    for name, split in splits.items():
        if len(split) == 0:
            raise UsageError(f"the {name} split has no documents ({len(corpus)} in all); allowed: more documents, "
                             f"or a larger --{name}_fraction" if name != "train" else
                             "the train split has no documents; allowed: smaller --val_fraction and --test_fraction")
    stage("read and split (datasets)")
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        tokens, eos_id = build_tokenizer(splits["train"], vocab_size, tokenizer)
        tokens.save(str(partial / "tokenizer.json"))
        stage("tokenizer" if tokenizer else "train the tokenizer (tokenizers)")
        dtype = "uint16" if tokens.get_vocab_size() <= 2 ** 16 else "uint32"
        work = partial / "work"  # Dataset.map's cache files, removed once every split is saved
        work.mkdir()
        arrow_bytes = corpus.data.nbytes  # the text as datasets holds it (memory-mapped), whatever the sources
        counts = {name: write_split(split, partial / name, work, partial / "tokenizer.json", eos_id, dtype,
                                    workers or os.cpu_count() or 1, arrow_bytes * len(split) / len(corpus))
                  for name, split in splits.items()}
        stage("encode and write token ids (tokenizers; datasets)")
        for name in HELD_OUT:  # their text too: lm-eval scores documents, not token ids
            splits[name].to_json(str(partial / f"{name}.jsonl"), lines=True, force_ascii=False)
        shutil.rmtree(work, ignore_errors=True)  # map's cache files: each split is whole in its own folder now
        stage("held-out text")
        manifest = {"format": FORMAT, "sources": records, "skipped_files": skipped,
                    "tokenizer": {"file": "tokenizer.json", "vocab_size": tokens.get_vocab_size(), "eos_id": eos_id,
                                  "from": tokenizer or f"byte-level BPE trained on the train split ({vocab_size})"},
                    "dtype": dtype, "field": field,
                    "split": {"by": "SHA-256 of the document's text, its first 8 bytes as u in [0, 1): val if "
                                    "u < val_fraction, test if u < val_fraction + test_fraction, else train",
                              "val_fraction": val_fraction, "test_fraction": test_fraction},
                    "splits": counts, "text_bytes": sum(r.get("bytes", 0) for r in records),
                    "seconds": time.perf_counter() - started, "seconds_by_stage": stages, **(origin or {})}
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: the folder is finished
        replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def replace(partial: Path, out: Path) -> None:
    """`partial` becomes `out`; an old `out` is moved aside first and removed only once the new one is in place."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    partial.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str]) -> None:
    from suite.parsing import Parser
    from suite.provenance import provenance

    parser = Parser(prog="foresight prepare", description="Your documents as a tokenized, streamable dataset "
                    "folder for --data.task=corpus (token ids as datasets folders, a tokenizer, a manifest).")
    parser.add_argument("sources", nargs="+", type=str, help="files, folders or globs: text files (one document "
                        "each), .jsonl/.json/.parquet/.csv with a text field, or a Dataset.save_to_disk folder")
    parser.add_argument("--out", type=str, required=True, help="the dataset folder to write")
    parser.add_argument("--vocab_size", type=int, default=4096, help="size of the byte-level BPE trained on the "
                        "training documents")
    parser.add_argument("--tokenizer", type=str, help="a Hugging Face tokenizer folder (tokenizer.json) to use "
                        "instead of training one")
    parser.add_argument("--field", type=str, default="text", help="the text field of table sources")
    parser.add_argument("--val_fraction", type=float, default=0.01, help="share of documents in the validation split")
    parser.add_argument("--test_fraction", type=float, default=0.01, help="share of documents in the test split")
    parser.add_argument("--bad", type=str, default="skip", help="files that are not UTF-8 text: skip (counted in "
                        "the manifest and said) or fail")
    parser.add_argument("--workers", type=int, help="tokenizing processes (default: one per CPU)")
    parser.add_argument("--overwrite", type=bool, default=False, help="replace a dataset already in --out")
    args = parser.parse_args(argv)
    manifest = prepare(args.sources, args.out, args.vocab_size, args.tokenizer, args.field, args.val_fraction,
                       args.test_fraction, args.bad, args.overwrite, args.workers, provenance(["prepare", *argv]))
    seconds = manifest["seconds"]
    megabytes = manifest["text_bytes"] / 1e6
    print(f"written: {args.out} ({MANIFEST}, tokenizer.json, {', '.join(SPLITS)})")
    for name, split in manifest["splits"].items():
        print(f"  {name}: {split['documents']:,} documents, {split['tokens']:,} tokens")
    tokens = sum(split["tokens"] for split in manifest["splits"].values())
    print(f"  {megabytes:.1f} MB of text in {seconds:.1f} s: {megabytes / seconds:.2f} MB/s, "
          f"{tokens / seconds:,.0f} tokens/s" + (f"; {manifest['skipped_files']} files skipped (not UTF-8 text)"
                                                 if manifest["skipped_files"] else ""))
    print("  time: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in manifest["seconds_by_stage"].items()))
