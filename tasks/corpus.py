"""The user's own documents, prepared by `foresight prepare` (`suite.prepare`): rows of `seq_len` tokens packed from
the documents end to end, streamed from litdata chunks by `litdata.StreamingDataset` (never loaded into memory),
in a seeded order that a resumed run continues. Each document ends with the separator the manifest names, and no
objective's target crosses it (`Task.document_separator`)."""

from __future__ import annotations

import json
from pathlib import Path

from suite.errors import UsageError, check_range
from tasks.base import Task

MANIFEST = "foresight.json"
"""What `foresight prepare` writes last into a finished folder (suite/prepare.py)."""
FORMAT = 1


def read_manifest(folder: str | Path, what: str = "--data.options.path") -> dict:
    """A prepared folder's manifest; a UsageError when the folder is not a finished `foresight prepare` output."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UsageError(f"{what} '{folder}' has no {MANIFEST} (not a finished `foresight prepare` folder); allowed: "
                         "a folder `foresight prepare` wrote to the end")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise UsageError(f"{what} '{folder}' has manifest format {manifest.get('format')!r}; allowed: {FORMAT}")
    return manifest


class Corpus(Task):
    name = "corpus"
    family = None
    primary = "bits_per_byte"
    """Scored by lm-eval's rolling log-likelihood of the test documents (tasks/corpus.yaml), like python_stdlib."""
    streaming = True

    def __init__(self, path: str = "", seq_len: int = 256, seed: int = 0):
        """
        Args:
            path: A folder written by `foresight prepare` (its foresight.json, tokenizer.json and splits).
            seq_len: Tokens per training row, packed from consecutive documents.
            seed: The order of the rows (with the run's seed).
        """
        from tokenizers import Tokenizer

        if not path:
            raise UsageError("corpus path is missing; allowed: --data.options.path=DIR of `foresight prepare`")
        check_range("corpus seq_len", seq_len, 2)
        self.path, self.seq_len_, self.seed = str(path), seq_len, seed
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

    def stream(self, split: str, shuffle: bool, seed: int = 0):
        """The split as a litdata.StreamingDataset of rows [seq_len] of token ids."""
        import litdata
        from litdata.streaming.item_loader import TokensLoader

        return litdata.StreamingDataset(str(Path(self.path) / split), shuffle=shuffle, drop_last=True,
                                        item_loader=TokensLoader(block_size=self.seq_len),
                                        seed=seed * 1_000_003 + self.seed)

    def _documents(self) -> dict[str, list[dict]]:
        """The held-out documents' text ({"text": ...}), which `foresight prepare` keeps beside their tokens; the
        training documents are streamed as tokens only."""
        found = {"train": []}
        for split in ("val", "test"):
            path = Path(self.path) / f"{split}.jsonl"
            found[split] = [{"text": json.loads(line)["text"]} for line in path.read_text().splitlines() if line]
        return found

    @staticmethod
    def score(doc: dict, completion: str) -> dict[str, float]:
        raise NotImplementedError("corpus is scored by rolling log-likelihood, not by answers")

    def evaluate(self, generate, batch) -> dict:
        return {}  # documents, not questions: the validation loss is the score during training
