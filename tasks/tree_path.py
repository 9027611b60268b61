"""Path-finding from the root to a named leaf of a tree (the generalisation of the star graph that Huang et al.,
"How Transformers Learn to Plan via Multi-Token Prediction", 2026, use: binary trees).

The tree is a full `branching`-ary tree of `depth` levels below the root, its nodes random distinct labels; the
goal is one of its leaves. On the star graph only the first step needs planning (every later node has one
successor); here every step above the goal's parent does: teacher-forced next-token prediction can learn to walk
down to some child, and to take the goal once its parent is reached, but choosing the branch that leads to the goal
needs a plan (or a walk back from the goal). A model that follows edges and picks children at random scores
branching^-(depth - 1) on the whole path and 1/branching on the first branch.

Text form, one token per node label (binary, depth 2); the prompt ends at "=", the answer is the path:

    4 8 | 3 4 | 3 1 | 1 6 | 4 0 | 1 9 / 3 8 = 3 4 8 <eos>

`answer_order="reverse"` (goal back to root; every node has one parent) is the positive control, as on the star
graph. Splits are deterministic in `seed`; no validation or test tree (the same labelled tree and goal, whatever
the edge order) is ever in the training split.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from suite.errors import UsageError, check_choice, check_range
from tasks.base import check_options, results_scorer
from tasks.paths import PathTask


class TreePath(PathTask):
    name = "tree_path"
    branch_metric = "first_branch_acc"

    def __init__(self, branching: int = 2, depth: int = 3, num_nodes: int = 30, num_train: int = 100_000,
                 num_val: int = 500, num_test: int = 1000, seed: int = 0,
                 loss_on: Literal["answer", "all"] = "answer", answer_order: Literal["forward", "reverse"] = "forward"):
        """
        Args:
            branching: Children of every inner node (>= 2; 2 is a binary tree).
            depth: Levels below the root (>= 2); the path has depth + 1 nodes and the goal is a leaf.
            num_nodes: Distinct node labels, each one token; must be at least the tree's size,
                (branching^(depth + 1) - 1) / (branching - 1).
            num_train: Training trees (repeats allowed, never a validation or test tree).
            num_val: Validation trees, distinct.
            num_test: Test trees, distinct.
            seed: Seed of all three splits.
            loss_on: Train on the answer tokens only ("answer") or on the whole sequence ("all").
            answer_order: The path from root to goal ("forward", the task) or from goal to root ("reverse", the
                positive control that next-token prediction solves).
        """
        check_range("tree_path branching", branching, 2)
        check_range("tree_path depth", depth, 2)
        check_choice("tree_path answer_order", answer_order, ("forward", "reverse"))
        check_options("tree_path", loss_on, num_train=num_train, num_val=num_val, num_test=num_test)
        size = (branching ** (depth + 1) - 1) // (branching - 1)
        if num_nodes < size:
            raise UsageError(f"tree_path num_nodes={num_nodes} is too small for branching={branching}, depth={depth}; "
                             f"allowed: >= the tree's {size} nodes")
        # distinct instances: labellings of the tree / its symmetries (children reordered at every inner node)
        # * choices of goal leaf
        inner = (branching ** depth - 1) // (branching - 1)
        distinct = math.perm(num_nodes, size) * branching ** depth // math.factorial(branching) ** inner
        if 2 * (num_val + num_test) > distinct:
            raise UsageError(f"tree_path num_val + num_test = {num_val + num_test} is too many: branching={branching}, "
                             f"depth={depth}, num_nodes={num_nodes} allow {distinct} distinct trees; allowed: at most "
                             f"half of them ({distinct // 2}); raise num_nodes")
        self.branching, self.depth, self.size = branching, depth, size
        self.num_train, self.num_val, self.num_test, self.seed, self.loss_on = (
            num_train, num_val, num_test, seed, loss_on)
        self.answer_order = answer_order
        self._layout(num_nodes, depth + 1, size - 1)

    @classmethod
    def chance(cls, metric: str, options: dict) -> tuple[float, str] | None:
        """path_acc: branching^-(depth - 1), what a model scores that follows edges, picks children at random and
        takes the goal once it is a child; first_branch_acc: 1/branching."""
        b, d = options["branching"], options["depth"]
        if metric == "path_acc":
            return float(b) ** -(d - 1), f"1/branching^(depth-1) = 1/{b ** (d - 1)}"
        if metric == "first_branch_acc":
            return 1.0 / b, f"1/branching = 1/{b}"
        return None

    def _graphs(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Nodes in breadth-first order (node i's parent is (i - 1) // branching), labelled at random."""
        b, leaves = self.branching, self.branching ** self.depth
        labels = rng.permuted(np.tile(np.arange(self.num_nodes), (count, 1)), axis=1)[:, : self.size]
        at = [self.size - leaves + rng.integers(leaves, size=count)]  # the goal's position, then its ancestors'
        for _ in range(self.depth):
            at.append((at[-1] - 1) // b)
        rows = np.arange(count)[:, None]
        path = labels[rows, np.stack(at[::-1], axis=1)]
        children = np.arange(1, self.size)
        edges = np.stack([labels[:, (children - 1) // b], labels[:, children]], axis=-1)
        return edges, path


process_results = results_scorer(TreePath)
"""lm-eval's scorer for tasks/tree_path.yaml."""
