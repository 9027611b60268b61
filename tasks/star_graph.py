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
from tasks.base import Generate, check_options, results_scorer
from tasks.paths import PathTask


class StarGraph(PathTask):
    name = "star_graph"
    branch_metric = "arm_acc"

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
        check_options("star_graph", loss_on, num_train=num_train, num_val=num_val, num_test=num_test)
        # distinct graphs: ordered label draws / orderings of the (unordered) arms * choices of goal arm
        distinct = math.perm(num_nodes, needed) // math.factorial(degree - 1)
        if 2 * (num_val + num_test) > distinct:
            raise UsageError(f"star_graph num_val + num_test = {num_val + num_test} is too many: degree={degree}, "
                             f"path_length={path_length}, num_nodes={num_nodes} allow {distinct} distinct graphs; "
                             f"allowed: at most half of them ({distinct // 2}); raise num_nodes")
        self.degree = degree
        self.num_train, self.num_val, self.num_test, self.seed, self.loss_on = (
            num_train, num_val, num_test, seed, loss_on)
        self.answer_order = answer_order
        self._layout(num_nodes, path_length, degree * (path_length - 1))

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

    def _graphs(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        d, arm_len = self.degree, self.path_length - 1
        labels = rng.permuted(np.tile(np.arange(self.num_nodes), (count, 1)), axis=1)[:, : 1 + d * arm_len]
        source, arms = labels[:, 0], labels[:, 1:].reshape(count, d, arm_len)
        rows = np.arange(count)
        path = np.concatenate([source[:, None], arms[rows, rng.integers(d, size=count)]], axis=1)
        starts = np.concatenate([np.repeat(source[:, None, None], d, axis=1), arms[:, :, :-1]], axis=2)
        return np.stack([starts, arms], axis=-1).reshape(count, self.num_edges, 2), path

    def evaluate(self, generate: Generate, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """path_acc and arm_acc (`PathTask.evaluate`), and random_arm_acc: what picking an arm at random scores
        (the Clever-Hans level)."""
        scores = super().evaluate(generate, batch)
        return {**scores, "random_arm_acc": torch.full((len(batch["tokens"]),), self.random_arm_accuracy)}


process_results = results_scorer(StarGraph)
"""lm-eval's scorer for tasks/star_graph.yaml."""
