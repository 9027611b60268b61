"""Boolean satisfiability: an assignment of every variable that satisfies a random 3-SAT formula (the planning task
with the largest multi-token effect in Huang et al., "How Transformers Learn to Plan via Multi-Token Prediction",
2026: exact accuracy 10.4% with next-token prediction, 28.2% / 69.5% / 87.5% with 2 / 3 / 7 tokens).

Every formula is satisfiable by construction (a planted assignment): the generator draws an assignment, then
each clause's three distinct variables and, uniformly, one of the seven sign patterns under which the assignment
satisfies it. The planted assignment is the answer trained on; any satisfying assignment scores. The default
clause/variable ratio, 4.26, is where random 3-SAT is hardest.

Text form, one word-level token per literal ("3" is x3, "-3" is not x3); the prompt lists the clauses, then "=";
the answer is every variable's literal in variable order:

    1 -3 4 | -2 3 -4 | 2 -1 3 = 1 2 3 -4 <eos>

Formulas are keyed by a hash that does not change when variables are renamed, clauses reordered or a clause's
literals reordered (Weisfeiler-Lehman colour refinement on the clause-variable graph, with signs): validation and
test formulas are distinct and none of them, under any renaming, is in the training split (the hash can only
over-exclude, never let one through). Splits are deterministic in `seed`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from suite.errors import UsageError, check_range
from tasks.base import EOS, SPECIAL_TOKENS, RowTask, check_options, first_line, results_scorer
from tasks.tokenizer import word_level

SYMBOLS = ["|", "="]
WIDTH = 3  # literals per clause
ROUNDS = 3  # colour refinements; more only separates formulas that are already distinct in practice


class Sat(RowTask):
    name = "sat"
    family = "reasoning"
    primary = "acc"
    metrics = ("acc", "clause_acc", "valid")
    validate = True

    def __init__(self, num_vars: int = 8, num_clauses: int | None = None, ratio: float = 4.26,
                 num_train: int = 100_000, num_val: int = 500, num_test: int = 1000, seed: int = 0,
                 loss_on: Literal["answer", "all"] = "answer", test_share: float = 0.0):
        """
        Args:
            num_vars: Variables (>= 3), each answered by one literal token.
            num_clauses: Clauses of three distinct variables (>= 1); None: round(ratio * num_vars).
            ratio: Clauses per variable when num_clauses is None (> 0); 4.26 is the hard region of random 3-SAT.
            num_train: Training formulas (repeats allowed, never a validation or test formula, renamed or not).
            num_val: Validation formulas, distinct.
            num_test: Test formulas, distinct.
            seed: Seed of all three splits.
            loss_on: Train on the answer tokens only ("answer") or on the whole sequence ("all").
            test_share: The share of training rows that are test formulas (in [0, 1); 0: none, the task). The
                positive control: a model that trained on the test formulas must score better on them, or the
                budget and seeds cannot show a difference on this task at all.
        """
        check_range("sat num_vars", num_vars, WIDTH)
        if not ratio > 0:
            raise UsageError(f"sat ratio={ratio} is out of range; allowed: > 0")
        clauses = round(ratio * num_vars) if num_clauses is None else num_clauses
        check_range("sat num_clauses", clauses, 1)
        check_options("sat", loss_on, num_train=num_train, num_val=num_val, num_test=num_test)
        if not 0 <= test_share < 1:
            raise UsageError(f"sat test_share={test_share} is out of range; allowed: in [0, 1)")
        self.test_share = test_share
        self.num_vars, self.num_clauses, self.ratio = num_vars, clauses, clauses / num_vars
        self.num_train, self.num_val, self.num_test, self.seed, self.loss_on = (
            num_train, num_val, num_test, seed, loss_on)
        literals = [str(v) for v in range(1, num_vars + 1)] + [f"-{v}" for v in range(1, num_vars + 1)]
        self.tokenizer = word_level(SYMBOLS + literals)
        self.literal_offset = len(SPECIAL_TOKENS) + len(SYMBOLS)  # +v at offset + v - 1, -v at offset + N + v - 1
        self.generation = {"until": [EOS, "\n"], "max_gen_toks": num_vars + 1}
        self.prompt_len = (WIDTH + 1) * clauses  # "a b c |" per clause, the last "|" read as "="
        self.answer_len = num_vars + 1

    @classmethod
    def chance(cls, metric: str, options: dict) -> tuple[float, str] | None:
        """clause_acc: 7/8, what a uniformly random assignment satisfies of random 3-clauses."""
        if metric == "clause_acc":
            return 7 / 8, "random assignment = 7/8"
        return None

    def formulas(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`count` planted formulas: variables [count, C, 3] (0-based, distinct within a clause), their signs
        [count, C, 3] (True: positive) and the planted assignments [count, N] (True: the variable is true)."""
        n, c = self.num_vars, self.num_clauses
        assignment = rng.integers(2, size=(count, n)).astype(bool)
        # three distinct variables: each draw skips the ones drawn before it (kept in increasing order)
        first, second, third = (rng.integers(n - k, size=(count, c)) for k in range(WIDTH))
        second = second + (second >= first)
        low, high = np.minimum(first, second), np.maximum(first, second)
        third = third + (third >= low)
        third = third + (third >= high)
        variables = np.stack([first, second, third], axis=2)
        pattern = rng.integers(1, 2 ** WIDTH, size=(count, c))  # which literals the assignment makes true: not none
        true = (pattern[..., None] >> np.arange(WIDTH)) & 1 == 1
        value = np.take_along_axis(assignment, variables.reshape(count, -1), axis=1).reshape(count, c, WIDTH)
        return variables, true == value, assignment

    def _sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, list[bytes]]:
        variables, positive, assignment = self.formulas(rng, count)
        n, off = self.num_vars, self.literal_offset
        literals = off + variables + n * ~positive
        sep, eq, eos = (self.token_id(t) for t in (*SYMBOLS, EOS))
        clause_tokens = np.concatenate([literals, np.full((count, self.num_clauses, 1), sep)], axis=2)
        clause_tokens[:, -1, -1] = eq
        answer = off + np.arange(n) + n * ~assignment
        tokens = np.concatenate([clause_tokens.reshape(count, -1), answer, np.full((count, 1), eos)], axis=1)
        keys = formula_keys(variables, positive, n)
        return tokens, [int(key).to_bytes(8, "little") for key in keys]

    @staticmethod
    def score(doc: dict, completion: str) -> dict[str, float]:
        """valid: the completion (up to <eos> or a newline) gives every variable of the formula exactly one literal
        and nothing else; acc: it is valid and satisfies every clause (any satisfying assignment, not only the
        planted one); clause_acc: the share of clauses that some literal of the completion satisfies (a variable
        given twice counts with its first literal; one not given satisfies nothing)."""
        num_vars = len(doc["answer"].split())
        clauses = [set(clause.split()) for clause in doc["prompt"].rstrip("= ").split("|")]
        words = first_line(completion).split()
        value: dict[str, bool] = {}
        for word in words:
            name = word.removeprefix("-")
            if name.isdigit() and 1 <= int(name) <= num_vars and str(int(name)) == name:
                value.setdefault(name, not word.startswith("-"))
        valid = len(words) == num_vars == len(value)
        chosen = {name if true else f"-{name}" for name, true in value.items()}
        satisfied = sum(bool(clause & chosen) for clause in clauses)
        return {"acc": float(valid and satisfied == len(clauses)), "clause_acc": satisfied / len(clauses),
                "valid": float(valid)}


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic): a fixed pseudo-random map of codes, so that
    sums of mixed codes hash multisets."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def formula_keys(variables: np.ndarray, positive: np.ndarray, num_vars: int) -> np.ndarray:
    """A 64-bit hash [count] of each formula that renaming its variables, reordering its clauses or a clause's
    literals leaves unchanged: colour refinement on the graph of clauses and variables, edges labelled by sign.
    Variables start with one colour; a clause's colour hashes the multiset of its (sign, variable colour); a
    variable's hashes its colour and the multiset of its (sign, clause colour); the key hashes the final multiset of
    clause colours."""
    count, clauses, width = variables.shape
    sign = positive.astype(np.uint64)
    flat = (variables + num_vars * np.arange(count)[:, None, None]).ravel()  # each formula's variables apart
    order = np.argsort(flat, kind="stable")  # occurrences grouped by variable, for the sums over them
    grouped = flat[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    colour = np.zeros(count * num_vars, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for _ in range(ROUNDS):
            clause = _mix(_mix(colour[flat].reshape(variables.shape) * np.uint64(2) + sign).sum(axis=2))
            occurrence = _mix(np.repeat(clause, width, axis=1).reshape(variables.shape) * np.uint64(2) + sign)
            refined = _mix(colour)
            refined[grouped[starts]] += np.add.reduceat(occurrence.ravel()[order], starts)
            colour = refined
        return _mix(clause).sum(axis=1)


process_results = results_scorer(Sat)
"""lm-eval's scorer for tasks/sat.yaml."""
