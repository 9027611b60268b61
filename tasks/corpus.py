"""The user's own documents, prepared by `foresight prepare` (`suite.prepare`): rows of `seq_len` tokens packed from
the documents end to end, read from the split's Hugging Face `datasets` folder (Arrow, memory-mapped) row by row as
the batches ask for them (the corpus is never loaded into memory), in the seeded order of every task's training loader
(`suite.data.ResumableLoader`), which a resumed or extended run continues exactly and DDP shards across ranks and
nodes. Each document ends with the separator the manifest names; no objective's target crosses it
(`Task.document_separator`), nor, with `document_mask`, any attention."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from suite.errors import UsageError, check_choice, check_range
from tasks.base import SPLITS, Task

MANIFEST = "foresight.json"
"""What `foresight prepare` writes last into a finished folder (suite/prepare.py)."""
FORMAT = 2
"""2: each split a `datasets` folder (save_to_disk) of documents' token ids; 1 (litdata chunks) is read no more."""


def read_manifest(folder: str | Path, what: str = "corpus path") -> dict:
    """A prepared folder's manifest; a UsageError when the folder is not a finished `foresight prepare` output."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UsageError(f"{what} '{folder}' has no {MANIFEST} (not a finished `foresight prepare` folder); allowed: "
                         "a folder `foresight prepare` wrote to the end")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise UsageError(f"{what} '{folder}' has manifest format {manifest.get('format')!r} (written by another "
                         f"foresight); allowed: format {FORMAT}: prepare the documents again with this foresight")
    return manifest


class Corpus(Task):
    name = "corpus"
    family = None
    primary = "bits_per_byte"
    """Scored by lm-eval's rolling log-likelihood of the test documents (tasks/corpus.yaml), like python_stdlib."""
    streaming = True

    def __init__(self, path: str = "", seq_len: int = 256, document_mask: bool = False,
                 train_on: list[str] | None = None):
        """
        Args:
            path: A folder written by `foresight prepare` (its foresight.json, tokenizer.json and splits).
            seq_len: Tokens per training row, packed from consecutive documents.
            document_mask: Attention stays within each document of a row, as no target ever crosses a
                document's end; false: attention reads the documents before it in the row (plain packing).
            train_on: The splits whose rows train the model: [train] (None), or [train, test] for a positive
                control that has seen the documents it is scored on (it must score better than a model that has
                not, at the same budget, or the budget and seeds cannot show a difference on this corpus).
        """
        from tokenizers import Tokenizer

        if not path:
            raise UsageError("corpus path is missing; allowed: a folder `foresight prepare` wrote (fit's "
                             "--data.options.path=DIR, or data: {options: {path: DIR}} in a sweep file)")
        check_range("corpus seq_len", seq_len, 2)
        self.train_on = list(train_on or ["train"])
        for split in self.train_on:
            check_choice("corpus train_on split", split, SPLITS)
        if "train" not in self.train_on or len(set(self.train_on)) != len(self.train_on):
            raise UsageError(f"corpus train_on={self.train_on} must hold train, each split once; allowed: [train], "
                             "[train, test], [train, val]")
        self.path, self.seq_len_, self.document_mask = str(path), seq_len, bool(document_mask)
        self.manifest = read_manifest(path)
        self.tokenizer = Tokenizer.from_file(str(Path(path) / self.manifest["tokenizer"]["file"]))
        self.document_separator = self.manifest["tokenizer"]["eos_id"]
        for split, counts in self.manifest["splits"].items():
            if counts["tokens"] < seq_len + (split == "train"):
                raise UsageError(f"corpus seq_len={seq_len} is longer than the {split} split of '{path}' "
                                 f"({counts['tokens']} tokens); allowed: seq_len < {counts['tokens']}")

    @property
    def seq_len(self) -> int:
        return self.seq_len_

    def rows(self, split: str) -> torch.utils.data.Dataset:
        """The split as a map-style dataset of rows [seq_len] of token ids (`Rows`); the training rows are those
        of every split in `train_on`."""
        names = self.train_on if split == "train" else [split]
        parts = [Rows(str(Path(self.path) / name), self.seq_len) for name in names]
        return parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)

    def _documents(self) -> dict[str, list[dict]]:
        """The documents' text ({"text": ...}): the held-out ones as `foresight prepare` kept them beside their
        tokens, the training ones decoded from their tokens (a byte-level BPE decodes to the very text). Only a
        mix reads them (it holds its rows in memory, tokenized with its own tokenizer); a corpus trained on
        alone is read as tokens, row by row."""
        found = {"train": self._decoded_training_documents()}
        for split in ("val", "test"):
            path = Path(self.path) / f"{split}.jsonl"
            found[split] = [{"text": json.loads(line)["text"]} for line in path.read_text().splitlines() if line]
        return found

    def _decoded_training_documents(self) -> list[dict]:
        tokens = Rows(str(Path(self.path) / "train"), 1)  # one token an item: every token, none cut off
        ids = torch.cat([tokens[i] for i in range(len(tokens))]).long()
        ends = (ids == self.document_separator).nonzero().squeeze(1).tolist()
        starts = [0, *(end + 1 for end in ends[:-1])]
        texts = self.tokenizer.decode_batch([ids[start:end].tolist() for start, end in zip(starts, ends)],
                                            skip_special_tokens=False)
        return [{"text": text} for text in texts]

    @staticmethod
    def score(doc: dict, completion: str) -> dict[str, float]:
        raise NotImplementedError("corpus is scored by rolling log-likelihood, not by answers")

    def evaluate(self, generate, batch) -> dict:
        return {}  # documents, not questions: the validation loss is the score during training


class Rows(torch.utils.data.Dataset):
    """A prepared split's rows of `seq_len` tokens by index: its documents' token ids end to end, row i the tokens
    [i * seq_len, (i + 1) * seq_len) (a last, shorter row is left out). The split is a `datasets` folder whose
    Arrow files are memory-mapped (`datasets.load_from_disk`, which also takes an fsspec URL of object storage and
    copies it to local disk first); a row is a slice of the flat token buffers, read without a copy of anything
    but the row. Opened lazily in each process that reads (every DataLoader worker its own)."""

    def __init__(self, folder: str, seq_len: int):
        self.folder, self.seq_len, self._pieces = folder, seq_len, None

    def _open(self) -> tuple[list, "np.ndarray"]:
        if self._pieces is None:
            import datasets
            import numpy as np

            column = datasets.load_from_disk(self.folder).data.table.column("ids")  # memory-mapped Arrow
            pieces = [chunk.flatten().to_numpy(zero_copy_only=True) for chunk in column.chunks if len(chunk)]
            self._pieces = (pieces, np.cumsum([0] + [len(piece) for piece in pieces]))
        return self._pieces

    def __len__(self) -> int:
        return int(self._open()[1][-1]) // self.seq_len

    def __getitem__(self, index: int) -> torch.Tensor:
        import numpy as np

        pieces, starts = self._open()
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        start, end = index * self.seq_len, (index + 1) * self.seq_len
        first = int(np.searchsorted(starts, start, side="right")) - 1
        parts = []
        while start < end:  # a row may run over the end of one Arrow chunk into the next
            piece = pieces[first]
            taken = piece[start - starts[first]: min(end, starts[first + 1]) - starts[first]]
            parts.append(taken)
            start += len(taken)
            first += 1
        return torch.from_numpy(np.concatenate(parts).astype(np.int64))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pieces": None}  # each worker process opens its own
