"""`foresight bench prepare`: `foresight prepare` on this machine's own text (the Python files and docs of its
standard library and installed packages, or the sources given), in MB/s and tokens/s, with the seconds of each
stage: reading and splitting (datasets), training the BPE (tokenizers), encoding and saving the token ids
(`Dataset.map`'s worker processes for a large split, each encoding its documents in batches), the held-out text."""

from __future__ import annotations

import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from suite.errors import UsageError, check_range

TEXT_SUFFIXES = (".py", ".pyi", ".md", ".rst", ".txt")


def machine_text(megabytes: float) -> list[str]:
    """Files of text on this machine, at least `megabytes` MB of them when there are: the standard library's and
    the installed packages' Python sources and docs, in sorted order."""
    roots = dict.fromkeys(Path(sysconfig.get_paths()[key]) for key in ("stdlib", "purelib"))
    files, total = [], 0
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix in TEXT_SUFFIXES and path.is_file() and "__pycache__" not in path.parts:
                files.append(str(path))
                total += path.stat().st_size
                if total >= megabytes * 1e6:
                    return files
    raise UsageError(f"this machine has {total / 1e6:.0f} MB of Python sources and docs; allowed: --megabytes "
                     f"<= {total / 1e6:.0f}, or --sources of your own")


def prepare(sources: list[str] | None = None, megabytes: float = 200, vocab_size: int = 4096,
            workers: int | None = None, keep: str | None = None, quick: bool = False) -> tuple[dict, str]:
    """Prepare a corpus and say how fast, stage by stage.

    Args:
        sources: Files, folders or globs, as `foresight prepare` takes them; default: `megabytes` MB of this
            machine's Python sources and docs.
        megabytes: How much of this machine's text, when no sources are given.
        vocab_size: Size of the BPE trained on the training documents.
        workers: Encoding processes (default: one per CPU).
        keep: Keep the prepared folder here (for `foresight bench corpus`); default: a temporary folder, removed.
        quick: 2 MB, a 512-token BPE: checks the bench, measures nothing worth keeping.
    """
    import os

    from suite.prepare import prepare as prepare_corpus

    if quick:
        megabytes, vocab_size = 2, 512
    check_range("megabytes", megabytes, 0.001)
    files = sources or machine_text(megabytes)
    workers = workers or os.cpu_count() or 1
    scratch = Path(tempfile.mkdtemp(prefix="foresight-bench-prepare-"))
    out = Path(keep) if keep else scratch / "corpus"
    try:
        manifest = prepare_corpus(files, out, vocab_size=vocab_size, workers=workers, overwrite=bool(keep))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    tokens = sum(split["tokens"] for split in manifest["splits"].values())
    documents = sum(split["documents"] for split in manifest["splits"].values())
    report = {"config": {"device": "cpu", "sources": sources or f"{len(files)} files of this machine's Python "
                                                                 "sources and docs",
                         "vocab_size": vocab_size, "workers": workers, "cpus": os.cpu_count(), "kept": keep},
              "text_bytes": manifest["text_bytes"], "documents": documents, "tokens": tokens,
              "skipped_files": manifest["skipped_files"], "seconds": manifest["seconds"],
              "seconds_by_stage": manifest["seconds_by_stage"],
              "megabytes_per_s": manifest["text_bytes"] / 1e6 / manifest["seconds"],
              "tokens_per_s": tokens / manifest["seconds"], "splits": manifest["splits"]}
    print(f"  {report['text_bytes'] / 1e6:.0f} MB in {report['seconds']:.0f} s", file=sys.stderr)
    return report, prepare_table(report)


def prepare_table(report: dict) -> str:
    c = report["config"]
    lines = [f"foresight prepare: {report['text_bytes'] / 1e6:,.1f} MB of text ({report['documents']:,} documents, "
             f"{report['tokens']:,} tokens at V={c['vocab_size']}), {c['workers']} encoding workers on {c['cpus']} "
             f"CPUs: {report['megabytes_per_s']:.2f} MB/s, {report['tokens_per_s']:,.0f} tokens/s.",
             "",
             "| stage | seconds | share |",
             "| --- | --- | --- |"]
    for name, seconds in report["seconds_by_stage"].items():
        lines.append(f"| {name} | {seconds:.1f} | {seconds / report['seconds']:.0%} |")
    lines.append(f"| all | {report['seconds']:.1f} | 100% |")
    return "\n".join(lines)
