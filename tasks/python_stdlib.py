"""A code corpus from this machine's Python standard library sources (its own .py files, tests and GUI packages
left out): plain text for pretraining, with a byte-level BPE trained offline on it, and held-out files for
perplexity. Files, not lines, are split into train/val/test, and held-out pieces that also occur in training
(some modules repeat others verbatim) are dropped, so no held-out code is ever trained on.

lm-eval scores it by rolling log-likelihood (bits per byte): a corpus, not a task with answers, so it feeds no
family score."""

from __future__ import annotations

import hashlib
import random
import sysconfig
from pathlib import Path

from suite.errors import UsageError, check_range
from tasks.base import PackedTask
from tasks.tokenizer import byte_level_bpe

LEFT_OUT = ("test", "idlelib", "lib2to3", "site-packages", "tkinter", "turtledemo", "ensurepip", "config-")


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's own modules, sorted (so the corpus is the same on every run of one Python)."""
    root = root or Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py")
                  if not any(part.startswith(LEFT_OUT) for part in p.relative_to(root).parts))


def chunks(source: str, max_chars: int) -> list[str]:
    """A file cut into pieces of at most `max_chars`, at blank lines where it can."""
    pieces, current = [], ""
    for block in source.split("\n\n"):
        if len(block) > max_chars and current:  # what came before stays before
            pieces.append(current)
            current = ""
        while len(block) > max_chars:  # one long block: cut at a line end
            cut = block.rfind("\n", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            pieces.append(block[:cut])
            block = block[cut:].lstrip("\n")
        if current and len(current) + 2 + len(block) > max_chars:
            pieces.append(current)
            current = block
        else:
            current = f"{current}\n\n{block}" if current else block
    if current.strip():
        pieces.append(current)
    return [p for p in pieces if p.strip()]


class PythonStdlib(PackedTask):
    name = "python_stdlib"
    family = None
    primary = "bits_per_byte"

    def __init__(self, max_files: int | None = None, max_chars: int = 2000, seq_len: int = 256,
                 vocab_size: int = 4096, held_out_percent: int = 5, seed: int = 0,
                 document_mask: bool = False):
        """
        Args:
            max_files: Use only this many files (every k-th of the sorted list), for quick runs; None: all.
            max_chars: Longest document, in characters; files are cut at blank lines.
            seq_len: Tokens per training row (documents are packed end to end).
            vocab_size: Size of the byte-level BPE trained on the training files.
            held_out_percent: Share of files (by a hash of their path) for validation, and again for test.
            seed: Order of the training documents.
            document_mask: Attention stays within each document of a row, as no target ever crosses a
                document's end; false: attention reads the documents before it in the row (plain packing).
        """
        check_range("python_stdlib max_chars", max_chars, 100)
        check_range("python_stdlib seq_len", seq_len, 8)
        check_range("python_stdlib vocab_size", vocab_size, 300)
        check_range("python_stdlib held_out_percent", held_out_percent, 1, 30)
        files = stdlib_files()
        if not files:
            raise UsageError(f"python_stdlib found no .py files under {sysconfig.get_paths()['stdlib']!r}; "
                             "allowed: a Python installation with its standard library sources")
        if max_files is not None:
            check_range("python_stdlib max_files", max_files, 3)
            files = files[:: max(1, len(files) // max_files)][:max_files]
        self.files, self.max_chars, self._seq_len, self.seed = files, max_chars, seq_len, seed
        self.held_out_percent, self.loss_on, self.document_mask = held_out_percent, "all", bool(document_mask)
        self.tokenizer = byte_level_bpe((doc["text"] for doc in self.documents("train")), vocab_size)

    def split_of(self, path: Path) -> str:
        bucket = int(hashlib.sha256(path.name.encode() + str(path.parent.name).encode()).hexdigest(), 16) % 100
        return "val" if bucket < self.held_out_percent else "test" if bucket < 2 * self.held_out_percent else "train"

    def _documents(self) -> dict[str, list[dict]]:
        documents = {"train": [], "val": [], "test": []}
        for path in self.files:
            text = path.read_text(encoding="utf-8", errors="replace")
            documents[self.split_of(path)] += [{"text": piece} for piece in chunks(text, self.max_chars)]
        # Some modules repeat others word for word (the encodings' decoding tables): a held-out piece that is
        # also training text would be scored as if unseen. Drop it.
        trained = {doc["text"] for doc in documents["train"]}
        for split in ("val", "test"):
            documents[split] = [doc for doc in documents[split] if doc["text"] not in trained]
        random.Random(self.seed).shuffle(documents["train"])
        return documents

    @staticmethod
    def score(doc: dict, completion: str) -> dict[str, float]:
        raise NotImplementedError("python_stdlib is scored by rolling log-likelihood, not by answers")
