"""Path-finding on a graph given as a shuffled edge list: what the star graph and the tree path tasks share.

A graph is a tree of distinct node labels, one token each, whose root is the source; the goal is one of its
leaves. The prompt lists the edges ("parent child", separated by "|") in random order, then "/", the source, the
goal and "="; the answer is the path from source to goal (`answer_order="forward"`) or from goal back to source
("reverse": every node has one incoming edge, so each next node is found by following an edge backward, which
teacher-forced next-token prediction learns; the positive control of Bachmann & Nagarajan 2024).

Graphs are keyed by the node each node hangs from and the goal, so two prompts that list the same tree and goal in
another edge order are the same instance: validation and test graphs are distinct and none is ever trained on.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from tasks.base import EOS, SPECIAL_TOKENS, Generate, RowTask
from tasks.tokenizer import word_level

SYMBOLS = ["|", "/", "="]


class PathTask(RowTask):
    """A row task whose instances are trees and root-to-leaf paths. Subclasses call `_layout` in `__init__` and
    implement `_graphs`."""

    family = "reasoning"
    primary = "path_acc"
    branch_metric: ClassVar[str]
    """The metric of the source's successor: the first step, the one that needs planning forward."""

    num_nodes: int
    path_length: int
    num_edges: int
    answer_order: str

    def _layout(self, num_nodes: int, path_length: int, num_edges: int) -> None:
        self.num_nodes, self.path_length, self.num_edges = num_nodes, path_length, num_edges
        self.tokenizer = word_level(SYMBOLS + [str(i) for i in range(num_nodes)])
        self.node_offset = len(SPECIAL_TOKENS) + len(SYMBOLS)
        self.generation = {"until": [EOS], "max_gen_toks": path_length + 1}
        self.prompt_len = 3 * num_edges + 3  # edges "u v |" less the last "|", then "/ s g ="
        self.answer_len = path_length + 1  # the path and <eos>

    @property
    def arm_index(self) -> int:
        """Where in the answer the source's successor is."""
        return 1 if self.answer_order == "forward" else self.path_length - 2

    def answer_token_names(self) -> list[str]:
        """The answer's tokens as tables name them: the path's nodes in the answer's order, then <eos>."""
        return [f"node {i}" for i in range(self.path_length)] + [EOS]

    def head_accuracy(self, predicted: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[B, heads, answer tokens]: 1 where head k, teacher-forced, predicts answer token i (the path's nodes, then
        <eos>) from position prompt_len + i - k: head 1 from the token before it, head 2 from the one before that
        (the first step from `=`, before any answer token is read), and so on. `predicted` [B, T', heads] holds
        each head's greedy token at every position of `tokens` [B, T] read so far (T' >= prompt_len + answer_len -
        1)."""
        offsets = torch.arange(self.answer_len, device=tokens.device)
        answer = tokens[:, self.prompt_len + offsets]
        right = torch.empty(predicted.shape[0], predicted.shape[2], self.answer_len, device=tokens.device)
        for k in range(1, predicted.shape[2] + 1):
            right[:, k - 1] = (predicted[:, self.prompt_len + offsets - k, k - 1] == answer).float()
        return right

    def _graphs(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` random graphs: their edges [count, num_edges, 2] as (parent, child) labels, in any fixed order,
        and the path from source to goal [count, path_length]."""
        raise NotImplementedError

    def _sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, list[bytes]]:
        edges, path = self._graphs(rng, count)
        edges = np.take_along_axis(edges, rng.random((count, self.num_edges)).argsort(axis=1)[..., None], axis=1)
        off, sep, slash, eq, eos = self.node_offset, *(self.token_id(t) for t in (*SYMBOLS, EOS))
        edge_tokens = np.concatenate([edges + off, np.full((count, self.num_edges, 1), sep)], axis=2)
        source, goal = path[:, :1], path[:, -1:]
        tokens = np.concatenate([
            edge_tokens.reshape(count, -1)[:, :-1],
            np.full((count, 1), slash), source + off, goal + off, np.full((count, 1), eq),
            (path if self.answer_order == "forward" else path[:, ::-1]) + off, np.full((count, 1), eos),
        ], axis=1)
        # the graph, whatever the edge order: each label's parent (-1: the source or not in the graph), the goal
        parent = np.full((count, self.num_nodes), -1, dtype=np.int32)
        parent[np.arange(count)[:, None], edges[..., 1]] = edges[..., 0]
        keys = np.concatenate([parent, goal.astype(np.int32)], axis=1)
        return tokens, [key.tobytes() for key in keys]

    @classmethod
    def score(cls, doc: dict, completion: str) -> dict[str, float]:
        """path_acc: the first len(path) labels of the completion are the path, in the document's order; the branch
        metric: the label next to the source is right (the answer reads goal to source when it starts at the goal,
        the prompt's last label)."""
        gold, words = doc["answer"].split(), completion.split()
        predicted = words[: len(gold)]
        arm = 1 if gold[0] != doc["prompt"].split()[-2] else len(gold) - 2  # the prompt ends "/ source goal ="
        return {"path_acc": float(predicted == gold),
                cls.branch_metric: float(predicted[arm: arm + 1] == gold[arm: arm + 1])}

    def evaluate(self, generate: Generate, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """path_acc: the whole path right (greedy decoding); the branch metric: the first step right."""
        tokens = batch["tokens"]
        gold = tokens[:, self.prompt_len: self.prompt_len + self.path_length]
        predicted = generate(tokens[:, : self.prompt_len], self.path_length)
        return {"path_acc": (predicted == gold).all(dim=1).float(),
                self.branch_metric: (predicted[:, self.arm_index] == gold[:, self.arm_index]).float()}
