"""Path-finding on star graphs (Bachmann & Nagarajan, "The Pitfalls of Next-Token Prediction", 2024).

A source node has `degree` arms, each a chain of `path_length - 1` further nodes; the goal is the last node of one
arm. The prompt lists the edges in random order, then the source and the goal; the answer is the path from source
to goal. Teacher-forced next-token training learns a "Clever Hans" shortcut: once the first step is given, each
next node is the unique successor of the previous one, so the model never learns to plan the first step and
picks an arm at random: full-path accuracy stalls near 1/degree. Multi-token objectives are claimed to escape it.

Text form, one token per node label (with degree 2, path length 3); the prompt ends at "=", the answer is the path:

    5 9 | 2 5 | 2 7 | 7 1 / 2 1 = 2 7 1 <eos>

Splits are deterministic in `seed`; validation and test graphs are distinct, and no graph of either (the same
source, goal and arms, whatever the edge order) is ever in the training split.

`answer_order="reverse"` is the positive control of Bachmann & Nagarajan: the answer is the path from the goal back
to the source. Every node has one incoming edge, so each next node is found by following an edge backward, and
teacher-forced next-token prediction learns it: path accuracy near 1 where the forward order stalls at 1/degree.
A suite that cannot show this cannot show a planning win either.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from suite.errors import UsageError, check_choice, check_range
from tasks.base import EOS, SPECIAL_TOKENS, Examples, Generate, Task, results_scorer
from tasks.tokenizer import word_level

SYMBOLS = ["|", "/", "="]


class StarGraph(Task):
    name = "star_graph"
    family = "reasoning"
    primary = "path_acc"

    def __init__(self, degree: int = 2, path_length: int = 4, num_nodes: int = 20, num_train: int = 100_000,
                 num_val: int = 500, num_test: int = 1000, seed: int = 0,
                 loss_on: Literal["answer", "all"] = "answer", answer_order: Literal["forward", "reverse"] = "forward"):
        """
        Args:
            degree: Arms leaving the source (>= 2); a model that picks an arm at random scores 1/degree.
            path_length: Nodes on the source-to-goal path, both ends included (>= 2).
            num_nodes: Distinct node labels, each one token; must be >= 1 + degree * (path_length - 1).
            num_train: Training graphs (repeats allowed, never a validation or test graph).
            num_val: Validation graphs, distinct.
            num_test: Test graphs, distinct.
            seed: Seed of all three splits.
            loss_on: Train on the answer tokens only ("answer", as in the paper) or on the whole sequence ("all").
            answer_order: The path from source to goal ("forward", the task) or from goal to source ("reverse",
                the positive control that next-token prediction solves).
        """
        check_range("star_graph degree", degree, 2)
        check_choice("star_graph answer_order", answer_order, ("forward", "reverse"))
        check_range("star_graph path_length", path_length, 2)
        needed = 1 + degree * (path_length - 1)
        if num_nodes < needed:
            raise UsageError(f"star_graph num_nodes={num_nodes} is too small for degree={degree}, "
                             f"path_length={path_length}; allowed: >= 1 + degree * (path_length - 1) = {needed}")
        for field, value, low in (("num_train", num_train, 1), ("num_val", num_val, 1), ("num_test", num_test, 1)):
            check_range(f"star_graph {field}", value, low)
        # distinct graphs: ordered label draws / orderings of the (unordered) arms * choices of goal arm
        distinct = math.perm(num_nodes, needed) // math.factorial(degree - 1)
        if 2 * (num_val + num_test) > distinct:
            raise UsageError(f"star_graph num_val + num_test = {num_val + num_test} is too many: degree={degree}, "
                             f"path_length={path_length}, num_nodes={num_nodes} allow {distinct} distinct graphs; "
                             f"allowed: at most half of them ({distinct // 2}); raise num_nodes")
        self.degree, self.path_length, self.num_nodes = degree, path_length, num_nodes
        self.num_train, self.num_val, self.num_test, self.seed, self.loss_on = (
            num_train, num_val, num_test, seed, loss_on)
        self.answer_order = answer_order
        self.tokenizer = word_level(SYMBOLS + [str(i) for i in range(num_nodes)])
        self.node_offset = len(SPECIAL_TOKENS) + len(SYMBOLS)
        self.generation = {"until": [EOS], "max_gen_toks": path_length + 1}
        self.num_edges = degree * (path_length - 1)
        self.prompt_len = 3 * self.num_edges + 3  # edges "u v |" less the last "|", then "/ s g ="
        self.answer_len = path_length + 1  # the path and <eos>

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.answer_len  # every graph has the same layout

    @property
    def arm_index(self) -> int:
        """Where in the answer the source's successor is: the first step, the one that needs planning forward."""
        return 1 if self.answer_order == "forward" else self.path_length - 2

    @classmethod
    def chance(cls, metric: str, options: dict) -> tuple[float, str] | None:
        """path_acc and arm_acc: 1/degree, what a model scores that follows edges but picks the first arm at random
        (the plateau next-token prediction is known to stop at)."""
        if metric in ("path_acc", "arm_acc"):
            return 1.0 / options["degree"], f"1/degree = 1/{options['degree']}"
        return None

    @property
    def random_arm_accuracy(self) -> float:
        """Full-path accuracy of a model that follows edges perfectly but picks the first arm at random."""
        return 1.0 / self.degree

    def _sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, list[bytes]]:
        """`count` random graphs as token rows [count, L] and a canonical key per graph."""
        d, arm_len = self.degree, self.path_length - 1
        labels = rng.permuted(np.tile(np.arange(self.num_nodes), (count, 1)), axis=1)[:, : 1 + d * arm_len]
        source, arms = labels[:, 0], labels[:, 1:].reshape(count, d, arm_len)
        rows = np.arange(count)
        path = np.concatenate([source[:, None], arms[rows, rng.integers(d, size=count)]], axis=1)
        starts = np.concatenate([np.repeat(source[:, None, None], d, axis=1), arms[:, :, :-1]], axis=2)
        edges = np.stack([starts, arms], axis=-1).reshape(count, self.num_edges, 2)
        edges = np.take_along_axis(edges, rng.random((count, self.num_edges)).argsort(axis=1)[..., None], axis=1)
        off, sep, slash, eq, eos = self.node_offset, *(self.token_id(t) for t in (*SYMBOLS, EOS))
        edge_tokens = np.concatenate([edges + off, np.full((count, self.num_edges, 1), sep)], axis=2)
        tokens = np.concatenate([
            edge_tokens.reshape(count, -1)[:, :-1],
            np.full((count, 1), slash), source[:, None] + off, path[:, -1:] + off, np.full((count, 1), eq),
            (path if self.answer_order == "forward" else path[:, ::-1]) + off, np.full((count, 1), eos),
        ], axis=1)
        # the graph, whatever the edge order: source, goal and the arms sorted by their first node
        canonical = np.take_along_axis(arms, arms[:, :, 0].argsort(axis=1)[..., None], axis=1)
        keys = np.concatenate([source[:, None], path[:, -1:], canonical.reshape(count, -1)], axis=1).astype(np.int32)
        return tokens, [key.tobytes() for key in keys]

    def _draw(self, stream: int, count: int, exclude: set[bytes], distinct: bool) -> tuple[np.ndarray, set[bytes]]:
        """`count` graphs from RNG stream `stream`, none of them in `exclude` (and no repeats if `distinct`), and
        `exclude` plus the keys drawn (when distinct)."""
        rng = np.random.default_rng([self.seed, stream])
        kept: list[np.ndarray] = []
        seen = set(exclude)
        while sum(len(k) for k in kept) < count:
            tokens, keys = self._sample(rng, count + count // 8 + 16)
            keep = []
            for i, key in enumerate(keys):
                if key not in seen:
                    keep.append(i)
                    if distinct:
                        seen.add(key)
            kept.append(tokens[keep])
        return np.concatenate(kept)[:count], seen

    def _rows(self) -> dict[str, torch.Tensor]:
        """Every split as token rows [N, L], drawn once (vectorized: a million graphs take seconds)."""
        if self._rows_cache is None:
            test, held_out = self._draw(2, self.num_test, set(), distinct=True)
            val, held_out = self._draw(1, self.num_val, held_out, distinct=True)
            train, _ = self._draw(0, self.num_train, held_out, distinct=False)
            self._rows_cache = {split: torch.from_numpy(rows).long()
                                for split, rows in (("train", train), ("val", val), ("test", test))}
        return self._rows_cache

    _rows_cache: dict[str, torch.Tensor] | None = None

    def _documents(self) -> dict[str, list[dict]]:
        documents = {}
        for split, rows in self._rows().items():
            prompts = self.tokenizer.decode_batch(rows[:, : self.prompt_len].tolist(), skip_special_tokens=False)
            paths = self.tokenizer.decode_batch(rows[:, self.prompt_len: self.prompt_len + self.path_length].tolist())
            documents[split] = [{"prompt": p, "answer": a} for p, a in zip(prompts, paths)]
        return documents

    def examples(self, split: str, tokenizer=None) -> Examples:
        """With the task's own tokenizer, straight from the generated rows (one token per label); with another
        (a data mix's), through the text documents."""
        if tokenizer is not None and tokenizer is not self.tokenizer:
            return super().examples(split, tokenizer)
        tokens = self._rows()[split]
        loss_mask = torch.ones_like(tokens, dtype=torch.bool)
        if self.loss_on == "answer":
            loss_mask[:, : self.prompt_len] = False
        return Examples(tokens, loss_mask, torch.full((len(tokens),), self.prompt_len))

    @staticmethod
    def score(doc: dict, completion: str) -> dict[str, float]:
        """path_acc: the first len(path) labels of the completion are the path, in the document's order; arm_acc:
        the label next to the source is right (the first step, the one that needs planning forward; the answer
        reads goal to source when it starts at the goal, the prompt's last label)."""
        gold, words = doc["answer"].split(), completion.split()
        predicted = words[: len(gold)]
        arm = 1 if gold[0] != doc["prompt"].split()[-2] else len(gold) - 2  # the prompt ends "/ source goal ="
        return {"path_acc": float(predicted == gold), "arm_acc": float(predicted[arm: arm + 1] == gold[arm: arm + 1])}

    def evaluate(self, generate: Generate, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """path_acc: the whole path right (greedy decoding); arm_acc: the first step, the one that needs planning,
        right; random_arm_acc: what picking an arm at random scores (the Clever-Hans level)."""
        tokens = batch["tokens"]
        gold = tokens[:, self.prompt_len: self.prompt_len + self.path_length]
        predicted = generate(tokens[:, : self.prompt_len], self.path_length)
        return {
            "path_acc": (predicted == gold).all(dim=1).float(),
            "arm_acc": (predicted[:, self.arm_index] == gold[:, self.arm_index]).float(),
            "random_arm_acc": torch.full((len(tokens),), self.random_arm_accuracy),
        }


process_results = results_scorer(StarGraph)
"""lm-eval's scorer for tasks/star_graph.yaml."""
