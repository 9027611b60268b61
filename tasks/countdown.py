"""Countdown arithmetic (the "Stream of Search" / TinyZero setting): reach a target with an expression that uses
each given number exactly once, with + - * / and parentheses.

Every instance is solvable by construction: the generator draws the numbers, combines them in a random expression
tree with random operators, evaluates it exactly (fractions.Fraction; intermediate values may be fractions) and
keeps it when the value is a positive integer <= max_target; that expression is the gold answer. Any correct
expression scores, not just the gold one.

Text form, one word-level token per number, operator or parenthesis: the prompt lists the numbers in drawn order,
then "->", the target and ":"; the answer is the expression with as few parentheses as it needs:

    3 5 7 1 -> 24 : ( 7 - 3 ) * ( 5 + 1 ) <eos>

Instances are keyed by (sorted numbers, target); validation and test instances are distinct and no instance of
either (with any expression) is ever in the training split. Splits are deterministic in `seed`.
"""

from __future__ import annotations

import ast
import math
import operator
import random
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Literal

from suite.errors import UsageError, check_range
from tasks.base import EOS, SPLITS, Task, check_options, draw_distinct, first_line, results_scorer
from tasks.tokenizer import word_level

SYMBOLS = ["(", ")", "+", "-", "*", "/", "->", ":"]


def divide(a: int | Fraction, b: int | Fraction) -> int | Fraction:
    """a / b exactly, an int when it is whole (the generator's values stay plain ints, which is faster, until a
    division leaves a remainder)."""
    quotient = Fraction(a, b)
    return quotient.numerator if quotient.denominator == 1 else quotient


SIGNS: dict[str, Callable[[int | Fraction, int | Fraction], int | Fraction]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": divide}
OPERATORS = {ast.Add: SIGNS["+"], ast.Sub: SIGNS["-"], ast.Mult: SIGNS["*"], ast.Div: SIGNS["/"]}
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
ATOM = 3  # the precedence of a number or a parenthesized expression
EXPRESSION = re.compile(r"[0-9\s()+\-*/]*")  # what an answer may contain at all, checked before parsing
MAX_ANSWER_CHARS = 400  # far beyond any honest answer; bounds the parser's work on junk


class Countdown(Task):
    name = "countdown"
    family = "reasoning"
    primary = "acc"
    metrics = ("acc", "valid")
    validate = True

    def __init__(self, count: int = 4, max_number: int = 20, max_target: int = 100, num_train: int = 100_000,
                 num_val: int = 500, num_test: int = 1000, seed: int = 0,
                 loss_on: Literal["answer", "all"] = "answer"):
        """
        Args:
            count: Numbers per instance (2..6), each to be used exactly once.
            max_number: The numbers are drawn uniformly from 1..max_number (>= 1).
            max_target: Targets are positive integers up to this (>= 1); other draws are rejected and redrawn.
            num_train: Training instances (repeats allowed, never a validation or test instance).
            num_val: Validation instances, distinct.
            num_test: Test instances, distinct.
            seed: Seed of all three splits.
            loss_on: Train on the answer tokens only ("answer") or on the whole sequence ("all").
        """
        check_range("countdown count", count, 2, 6)
        check_range("countdown max_number", max_number, 1)
        check_range("countdown max_target", max_target, 1)
        check_options("countdown", loss_on, num_train=num_train, num_val=num_val, num_test=num_test)
        # an upper bound on distinct instances (every multiset with every target); the real space is smaller
        bound = math.comb(max_number + count - 1, count) * max_target
        if 2 * (num_val + num_test) > bound:
            raise UsageError(f"countdown num_val + num_test = {num_val + num_test} is too many: count={count}, "
                             f"max_number={max_number}, max_target={max_target} allow fewer than {bound} distinct "
                             f"instances; allowed: at most {bound // 2}; raise max_number or max_target")
        self.count, self.max_number, self.max_target = count, max_number, max_target
        self.num_train, self.num_val, self.num_test, self.seed, self.loss_on = (
            num_train, num_val, num_test, seed, loss_on)
        self.tokenizer = word_level(SYMBOLS + [str(i) for i in range(max(max_target, max_number) + 1)])
        # count numbers, count - 1 operators, at most count - 2 parenthesized subexpressions; then <eos>
        self.generation = {"until": [EOS, "\n"], "max_gen_toks": 4 * count - 4}

    def _sample(self, rng: random.Random) -> tuple[tuple, dict] | None:
        """A random instance as (key, document), or None when its value is not a target (the caller redraws)."""
        draw = rng.random  # rng.random() is several times faster than randint/sample/choice, and this loop is hot
        numbers = [int(draw() * self.max_number) + 1 for _ in range(self.count)]
        # subexpressions as (exact value, tree): a tree is a number or (sign, left tree, right tree)
        nodes: list[tuple[int | Fraction, object]] = [(n, n) for n in numbers]
        while len(nodes) > 1:
            i = int(draw() * len(nodes))
            j = int(draw() * (len(nodes) - 1))
            j += j >= i  # two distinct positions; the left operand is not always the earlier one
            (left, left_tree), (right, right_tree) = nodes[i], nodes[j]
            sign = "+-*/"[int(draw() * 4)]
            if sign == "/" and right == 0:
                return None
            merged = (SIGNS[sign](left, right), (sign, left_tree, right_tree))
            nodes = [node for k, node in enumerate(nodes) if k != i and k != j] + [merged]
        value, tree = nodes[0]
        if value.denominator != 1 or not 0 < value <= self.max_target:
            return None
        target = int(value)
        document = {"prompt": " ".join(map(str, numbers)) + f" -> {target} :", "answer": render(tree)[0]}
        return (tuple(sorted(numbers)), target), document

    def _documents(self) -> dict[str, list[dict]]:
        sizes = {"train": self.num_train, "val": self.num_val, "test": self.num_test}
        documents: dict[str, list[dict]] = {}
        held_out: set = set()
        for split in reversed(SPLITS):  # test first, then val, then train around both
            rng = random.Random(f"countdown/{self.seed}/{split}")
            documents[split], held_out = draw_distinct(
                lambda: self._sample(rng), sizes[split], held_out, distinct=split != "train",
                what=f"countdown {split} instances with count={self.count}, max_number={self.max_number}, "
                     f"max_target={self.max_target}")
        return documents

    @staticmethod
    def score(doc: dict, completion: str) -> dict[str, float]:
        """valid: the completion (up to <eos> or a newline) is an arithmetic expression of integers, + - * / and
        parentheses that uses exactly the prompt's numbers; acc: it is valid and its value is the target."""
        numbers_text, target_text = doc["prompt"].split("->")
        given = sorted(map(int, numbers_text.split()))
        target = int(target_text.replace(":", " ").split()[0])
        parsed = evaluate_expression(first_line(completion))
        valid = parsed is not None and sorted(parsed[0]) == given
        return {"acc": float(valid and parsed[1] == target), "valid": float(valid)}


def evaluate_expression(text: str) -> tuple[list[int], int | Fraction | None] | None:
    """The numbers an arithmetic expression uses and its exact value (None after a division by zero), or None when
    `text` is anything but integers, binary + - * / and parentheses. Parsed with `ast`, never executed."""
    if len(text) > MAX_ANSWER_CHARS or not EXPRESSION.fullmatch(text):
        return None
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    numbers: list[int] = []

    def value(node: ast.AST) -> int | Fraction | None:
        if isinstance(node, ast.Constant) and type(node.value) is int:  # not True/False, floats or strings
            numbers.append(node.value)
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            left, right = value(node.left), value(node.right)  # both sides first: `numbers` must be complete
            if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
                return None
            return OPERATORS[type(node.op)](left, right)
        raise ValueError(f"not allowed in an answer: {type(node).__name__}")  # unary minus, **, //, names ...

    try:
        result = value(tree)
    except ValueError:
        return None
    return numbers, result


def render(tree) -> tuple[str, int]:
    """An expression tree as text with as few parentheses as it needs, and the precedence of its outermost
    operator (ATOM for a number)."""
    if isinstance(tree, int):
        return str(tree), ATOM
    sign, (left, left_rank), (right, right_rank) = tree[0], render(tree[1]), render(tree[2])
    rank = PRECEDENCE[sign]
    if left_rank < rank:
        left = f"( {left} )"
    # a - (b + c) and a / (b * c) need their parentheses; a + (b - c) and a * (b / c) do not
    if right_rank < rank or (right_rank == rank and sign in "-/"):
        right = f"( {right} )"
    return f"{left} {sign} {right}", rank


process_results = results_scorer(Countdown)
"""lm-eval's scorer for tasks/countdown.yaml."""
