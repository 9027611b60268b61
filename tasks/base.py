"""What every task family provides: deterministic splits as text documents, their token ids for training, the
lm-eval settings that score them, and the scorer itself, shared by training-time validation and lm-eval."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from suite.errors import UsageError, check_choice, check_range

SPLITS = ("train", "val", "test")
EOS = "<eos>"
SPECIAL_TOKENS = ["<pad>", "<unk>", EOS]
"""Every foresight tokenizer starts with these three, at ids 0, 1, 2."""

Generate = Callable[[torch.Tensor, int], torch.Tensor]
"""generate(prompt_ids [B, P], max_new_tokens) -> new token ids [B, max_new_tokens], greedy."""


@dataclass
class Examples(torch.utils.data.Dataset):
    """One split of a task as token ids: a map-style dataset of dicts for the DataLoader."""

    tokens: torch.Tensor
    """[N, L] token ids, right-padded with the pad id (0)."""
    loss_mask: torch.Tensor
    """[N, L] bool: the tokens that are prediction targets in training."""
    prompt_len: torch.Tensor
    """[N] where each example's answer starts (its length when it has no prompt)."""

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens[i], "loss_mask": self.loss_mask[i], "prompt_len": self.prompt_len[i]}


class Task:
    """A task family. Subclasses set the class attributes, build `self.tokenizer` (a `tokenizers.Tokenizer` whose
    first ids are SPECIAL_TOKENS) and implement `_documents` and `score`.

    A document is a JSON-ready dict: "prompt" and "answer" (text; the model is trained on prompt + answer + <eos>
    and asked to continue the prompt), or "text" alone for plain training text; plus whatever `score` needs."""

    name: ClassVar[str]
    family: ClassVar[str]
    """The score this task feeds: "reasoning", "knowledge" or "code"."""
    primary: ClassVar[str]
    """The `score` metric that stands for the task (shown in the progress bar, averaged into the family score)."""
    generation: ClassVar[dict] = {"until": [EOS], "max_gen_toks": 64}
    """lm-eval generation settings for this task's questions."""

    validate: ClassVar[bool] = False
    """Generate and score answers during training-time validation (for tasks whose answers are short); others are
    scored by `foresight eval` only. `score` must then judge a document from its prompt and answer alone."""

    @classmethod
    def chance(cls, metric: str, options: dict) -> tuple[float, str] | None:
        """(score, what it is) of a model that guesses, on `metric` with these options (the defaults filled in),
        without building the task: the report's plots draw it as a reference line; None where there is none."""
        return None

    document_separator: int | None = None
    """The token id that ends each document where rows are packed with several documents whose targets must not
    cross from one into the next (`objectives.base.future_targets`); None where each row is one document."""

    streaming: ClassVar[bool] = False
    """The task reads its rows from disk as batches ask for them (`rows(split)`, a map-style dataset) instead of
    holding its splits in memory (`examples(split)`)."""

    document_mask: bool = False
    """Attention, too, stays within each document of a packed row (`suite.model.document_mask`); the option of
    tasks that pack documents."""

    tokenizer = None
    loss_on = "answer"
    _documents_cache: dict[str, list[dict]] | None = None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def token_id(self, token: str) -> int:
        return self.tokenizer.token_to_id(token)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(map(int, ids)), skip_special_tokens=False)

    def documents(self, split: str) -> list[dict]:
        """The split's documents; all splits are made together on first use, so they can exclude each other."""
        check_choice("split", split, SPLITS)
        if self._documents_cache is None:
            self._documents_cache = self._documents()
        return self._documents_cache[split]

    def _documents(self) -> dict[str, list[dict]]:
        raise NotImplementedError

    @staticmethod
    def score(doc: dict, completion: str) -> dict[str, float]:
        """Scores in [0, 1] of a model's `completion` of `doc["prompt"]`, from the document alone."""
        raise NotImplementedError

    def examples(self, split: str, tokenizer=None) -> Examples:
        """The split as token ids, with `tokenizer` (default: the task's own, and then computed once)."""
        if tokenizer is not None and tokenizer is not self.tokenizer:
            return encode_documents(self.documents(split), tokenizer, self.loss_on)
        cache = self.__dict__.setdefault("_examples_cache", {})
        if split not in cache:
            cache[split] = encode_documents(self.documents(split), self.tokenizer, self.loss_on)
        return cache[split]

    @property
    def seq_len(self) -> int:
        """Tokens per example (the longest, where lengths vary)."""
        return max(self.examples(split).tokens.shape[1] for split in SPLITS)

    def evaluate(self, generate: Generate, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-example scores [B] of a validation batch: each prompt answered by greedy `generate` (prompts of one
        length at a time), judged by `score` against the answer in the batch. {} unless `validate`."""
        if not self.validate:
            return {}
        eos = self.token_id(EOS)
        tokens, starts = batch["tokens"], batch["prompt_len"]
        scores: list[dict[str, float]] = [{}] * len(tokens)
        for start in starts.unique().tolist():
            rows = (starts == start).nonzero().squeeze(1)
            generated = generate(tokens[rows, :start], self.generation["max_gen_toks"])
            for row, new in zip(rows.tolist(), generated.tolist()):
                answer = tokens[row, start:].tolist()
                doc = {"prompt": self.decode(tokens[row, :start]), "answer": self.decode(_until(answer, eos))}
                scores[row] = self.score(doc, self.decode(_until(new, eos)))
        return {name: torch.tensor([s[name] for s in scores]) for name in scores[0]}


class RowTask(Task):
    """A generated task whose every instance is one row of the same layout, drawn vectorized in numpy: a prompt of
    `prompt_len` tokens and an answer of `answer_len` (its <eos> included), one word-level token per symbol.
    Subclasses set both lengths, `seed` and the split sizes, and implement `_sample`; splits are drawn once, test
    first, then validation, then training around both, each from its own RNG stream of `seed`."""

    prompt_len: int
    answer_len: int
    seed: int
    num_train: int
    num_val: int
    num_test: int
    test_share: float = 0.0
    """The share of training rows that are test instances (cycled): the positive control that has seen the test
    split, which must score better on it; 0 for every honest run."""
    _rows_cache: dict[str, torch.Tensor] | None = None

    def _sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, list[bytes]]:
        """`count` random instances as token rows [count, L] and a key per instance: equal keys for instances
        that count as the same (a held-out instance is never trained on under any of its forms)."""
        raise NotImplementedError

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.answer_len

    def _draw(self, stream: int, count: int, exclude: set[bytes], distinct: bool) -> tuple[np.ndarray, set[bytes]]:
        """`count` rows from RNG stream `stream`, none of them in `exclude` (and no repeats if `distinct`), and
        `exclude` plus the keys drawn (when distinct). A UsageError when a round of draws brings nothing new."""
        rng = np.random.default_rng([self.seed, stream])
        kept: list[np.ndarray] = []
        seen = set(exclude)
        found = 0
        while found < count:
            tokens, keys = self._sample(rng, count + count // 8 + 16)
            keep = []
            for i, key in enumerate(keys):
                if key not in seen:
                    keep.append(i)
                    if distinct:
                        seen.add(key)
            if not keep:
                split = {0: "train", 1: "val", 2: "test"}[stream]
                raise UsageError(f"cannot draw {count} {self.name} {split} instances: only {found} found that are "
                                 "not held out (or repeated); allowed: fewer, or options with more distinct instances")
            kept.append(tokens[keep])
            found += len(keep)
        return np.concatenate(kept)[:count], seen

    def _rows(self) -> dict[str, torch.Tensor]:
        """Every split as token rows [N, L], drawn once."""
        if self._rows_cache is None:
            test, held_out = self._draw(2, self.num_test, set(), distinct=True)
            val, held_out = self._draw(1, self.num_val, held_out, distinct=True)
            train, _ = self._draw(0, self.num_train, held_out, distinct=False)
            seen = round(self.test_share * self.num_train)
            if seen:  # every k-th training row a test row, so that every batch holds its share of them
                at = np.linspace(0, self.num_train - 1, seen).round().astype(int)
                train[at] = test[np.arange(seen) % len(test)]
            self._rows_cache = {split: torch.from_numpy(rows).long()
                                for split, rows in (("train", train), ("val", val), ("test", test))}
        return self._rows_cache

    def _documents(self) -> dict[str, list[dict]]:
        documents = {}
        end = self.prompt_len + self.answer_len - 1  # the answer without its <eos>
        for split, rows in self._rows().items():
            prompts = self.tokenizer.decode_batch(rows[:, : self.prompt_len].tolist(), skip_special_tokens=False)
            answers = self.tokenizer.decode_batch(rows[:, self.prompt_len: end].tolist())
            documents[split] = [{"prompt": p, "answer": a} for p, a in zip(prompts, answers)]
        return documents

    def examples(self, split: str, tokenizer=None) -> Examples:
        """With the task's own tokenizer, straight from the generated rows; with another (a data mix's), through
        the text documents."""
        if tokenizer is not None and tokenizer is not self.tokenizer:
            return super().examples(split, tokenizer)
        tokens = self._rows()[split]
        loss_mask = torch.ones_like(tokens, dtype=torch.bool)
        if self.loss_on == "answer":
            loss_mask[:, : self.prompt_len] = False
        return Examples(tokens, loss_mask, torch.full((len(tokens),), self.prompt_len))


class PackedTask(Task):
    """A task trained as documents packed end to end into rows of `seq_len` tokens (a corpus, a mixture): its
    rows have no prompts, so it is not validated by generation. Subclasses set `self._seq_len`."""

    _seq_len: int

    @property
    def document_separator(self) -> int:
        return self.token_id(EOS)  # every packed document ends with <eos>

    def examples(self, split: str, tokenizer=None) -> Examples:
        cache = self.__dict__.setdefault("_packed", {})
        key = (split, id(tokenizer))
        if key not in cache:
            cache[key] = pack_documents(self.documents(split), tokenizer or self.tokenizer, self._seq_len,
                                        self.loss_on)
        return cache[key]

    @property
    def seq_len(self) -> int:
        return self._seq_len


def check_options(task: str, loss_on: str, **sizes: int) -> None:
    """One-line UsageErrors for the options every generated family has: split sizes >= 1 and loss_on."""
    for field, value in sizes.items():
        check_range(f"{task} {field}", value, 1)
    check_choice(f"{task} loss_on", loss_on, ("answer", "all"))


def truncate(completion: str, stops) -> str:
    """`completion` up to the first occurrence of any of the `stops` strings (lm-eval's `until`)."""
    for stop in stops:
        completion = completion.split(stop)[0]
    return completion


def first_line(completion: str) -> str:
    """A completion up to <eos> or the first newline: the answer a short-answer task judges."""
    return truncate(completion, (EOS, "\n"))


def draw_distinct(sample: Callable[[], tuple[Hashable, dict] | None], count: int, exclude: set, distinct: bool,
                  what: str, patience: int = 100_000) -> tuple[list[dict], set]:
    """`count` documents from `sample()` (which returns (key, document) or None for a rejected draw) whose keys are
    not in `exclude`, without repeated keys if `distinct`; returns them and `exclude` plus the keys drawn (when
    distinct). A UsageError naming `what` if `patience` draws in a row bring nothing new: the space is too small."""
    documents, seen, misses = [], set(exclude), 0
    while len(documents) < count:
        drawn = sample()
        if drawn is None or drawn[0] in seen:
            misses += 1
            if misses > patience:
                raise UsageError(f"cannot draw {count} {what}: only {len(documents)} found that are not held out "
                                 f"(or repeated); allowed: fewer, or options with more distinct instances")
            continue
        misses = 0
        documents.append(drawn[1])
        if distinct:
            seen.add(drawn[0])
    return documents, seen


def _until(ids: list[int], stop: int) -> list[int]:
    return ids[: ids.index(stop)] if stop in ids else ids


def results_scorer(task: type[Task]):
    """lm-eval's `process_results(doc, results)` for a task's YAML: the task's `score` of the first generation."""

    def process_results(doc: dict, results: list[str]) -> dict[str, float]:
        return task.score(doc, results[0])

    return process_results


def _encode(documents: list[dict], tokenizer, loss_on: str) -> list[tuple[list[int], list[bool], int]]:
    """Each document as (ids of prompt + answer + <eos> or text + <eos>, loss mask, where its answer starts)."""
    eos = tokenizer.token_to_id(EOS)
    prompts = tokenizer.encode_batch([doc.get("prompt", "") for doc in documents])
    bodies = tokenizer.encode_batch([doc["answer"] if "answer" in doc else doc["text"] for doc in documents])
    encoded = []
    for doc, prompt, body in zip(documents, prompts, bodies):
        ids = prompt.ids + body.ids + [eos]
        start = len(prompt.ids) if "answer" in doc else 0
        encoded.append((ids, [loss_on == "all" or i >= start for i in range(len(ids))],
                        start if "answer" in doc else len(ids)))
    return encoded


def encode_documents(documents: list[dict], tokenizer, loss_on: str = "answer") -> Examples:
    """One row per document: prompt + answer + <eos> (or text + <eos>), right-padded; the loss mask covers the
    answer and <eos> (everything, with loss_on="all", or for plain text)."""
    encoded = _encode(documents, tokenizer, loss_on)
    width = max(len(ids) for ids, _, _ in encoded)
    tokens = torch.zeros(len(encoded), width, dtype=torch.long)
    loss_mask = torch.zeros(len(encoded), width, dtype=torch.bool)
    for i, (ids, mask, _) in enumerate(encoded):
        tokens[i, : len(ids)] = torch.tensor(ids)
        loss_mask[i, : len(ids)] = torch.tensor(mask)
    return Examples(tokens, loss_mask, torch.tensor([start for _, _, start in encoded]))


def pack_documents(documents: list[dict], tokenizer, seq_len: int, loss_on: str = "answer") -> Examples:
    """Documents end to end (each closed by <eos>) cut into rows of `seq_len` tokens, the last row padded: no
    compute spent on padding, as in pretraining. Attention crosses document boundaries; the <eos> marks them."""
    encoded = _encode(documents, tokenizer, loss_on)
    ids = torch.tensor([i for doc, _, _ in encoded for i in doc], dtype=torch.long)
    mask = torch.tensor([m for _, doc, _ in encoded for m in doc], dtype=torch.bool)
    rows = -(-len(ids) // seq_len)
    tokens = torch.zeros(rows * seq_len, dtype=torch.long)
    loss_mask = torch.zeros(rows * seq_len, dtype=torch.bool)
    tokens[: len(ids)], loss_mask[: len(ids)] = ids, mask
    return Examples(tokens.view(rows, seq_len), loss_mask.view(rows, seq_len), torch.full((rows,), seq_len))
