"""A data mixture of task families with one shared tokenizer, so one training run yields every family's score.

Training rows are documents of all components packed end to end; each component contributes its weight's share
of `train_tokens` (its training documents in a seeded order, repeated if the share is larger than the set). Every
document carries the name of its component under "task".
Validation and test rows are every component's own held-out documents, packed. `foresight eval` scores each
component on its own test split, tokenized with the mix's tokenizer (which the checkpoint stores)."""

from __future__ import annotations

import random

from suite.errors import UsageError, check_range
from tasks.base import PackedTask
from tasks.registry import build_component
from tasks.tokenizer import byte_level_bpe

DEFAULT_COMPONENTS = {"star_graph": 1.0, "countdown": 1.0, "biographies": 1.0, "synthetic_code": 1.0,
                      "python_stdlib": 1.0}


class Mix(PackedTask):
    name = "mix"
    family = None
    primary = None

    def __init__(self, components: dict[str, float] | None = None, options: dict[str, dict] | None = None,
                 train_tokens: int = 2_000_000, seq_len: int = 256, vocab_size: int = 4096,
                 tokenizer_chars: int = 2_000_000, seed: int = 0, document_mask: bool = False):
        """
        Args:
            components: Task name -> weight (share of training tokens), e.g. {star_graph: 1, python_stdlib: 2}.
            options: Task name -> that task's options, e.g. {star_graph: {degree: 3}}.
            train_tokens: Training tokens in all (before packing).
            seq_len: Tokens per row.
            vocab_size: Size of the shared byte-level BPE.
            tokenizer_chars: Characters of training text per component that the tokenizer is trained on.
            seed: Order and sampling of the training documents.
            document_mask: Attention stays within each document of a row, as no target ever crosses a
                document's end; false: attention reads the documents before it in the row (plain packing).
        """
        components = dict(DEFAULT_COMPONENTS if components is None else components)
        options = dict(options or {})
        unknown = set(options) - set(components)
        if unknown:
            raise UsageError(f"mix options name {sorted(unknown)}, which are not components; allowed: "
                             f"{', '.join(components)}")
        if not components or any(w < 0 for w in components.values()) or not sum(components.values()) > 0:
            raise UsageError(f"mix components={components} need a positive total weight; allowed: "
                             "{task: weight >= 0, ...}")
        check_range("mix train_tokens", train_tokens, 1)
        check_range("mix seq_len", seq_len, 8)
        self.components = components
        self.tasks = {name: build_component(name, **options.get(name, {})) for name in components}
        for name, task in self.tasks.items():
            if not task.documents("train") and components[name] > 0:
                raise UsageError(f"mix component {name!r} has no training data; allowed: trainable tasks")
        self.train_tokens, self._seq_len, self.seed, self.loss_on = train_tokens, seq_len, seed, "answer"
        self.document_mask = bool(document_mask)
        self.tokenizer = byte_level_bpe(self._tokenizer_texts(tokenizer_chars), vocab_size)

    def _tokenizer_texts(self, chars: int):
        for task in self.tasks.values():
            budget = chars
            for doc in task.documents("train"):
                text = doc.get("prompt", "") + doc.get("answer", doc.get("text", ""))
                yield text
                budget -= len(text)
                if budget <= 0:
                    break

    def _documents(self) -> dict[str, list[dict]]:
        rng = random.Random(self.seed)
        documents = {"train": [], "val": [], "test": []}
        total = sum(self.components.values())
        for name, task in self.tasks.items():
            train = task.documents("train")
            budget = self.train_tokens * self.components[name] / total
            order = list(range(len(train)))
            rng.shuffle(order)
            lengths = [len(ids) for ids in self.tokenizer.encode_batch(
                [d.get("prompt", "") + d.get("answer", d.get("text", "")) for d in train])]
            taken, i = 0, 0
            while taken < budget and train:
                documents["train"].append({**train[order[i % len(order)]], "task": name})
                taken += lengths[order[i % len(order)]] + 1
                i += 1
            documents["val"] += [{**doc, "task": name} for doc in task.documents("val")]
            documents["test"] += [{**doc, "task": name} for doc in task.documents("test")]
        rng.shuffle(documents["train"])
        return documents

    @staticmethod
    def score(doc: dict, completion: str) -> dict[str, float]:
        raise NotImplementedError("a mix is scored component by component (foresight eval)")
