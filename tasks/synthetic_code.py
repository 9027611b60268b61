"""Small Python functions written from a docstring and examples, scored by hidden tests run in the sandbox.

Each instance comes from one of the TEMPLATES (sum of the elements with a given remainder, scale and shift a list,
count characters, clamp, pick words, linear recurrences, running maxima, filters, repeat and join, digit
statistics, polynomials, ciphers, modular powers ...), drawn with its parameters (constants, operators,
separators), a function name and an argument name. The gold body is the template's; the docstring's examples and
the hidden tests are computed by running that gold function in-process on random inputs (our own code, never the
model's: model text runs only in `suite.sandbox`).

Text form (byte-level BPE trained on the training text): the prompt is the `def` line and the docstring, ending
with a newline; the answer is the indented body:

    def clamp(x):
        \"\"\"Return x limited to the range from -3 to 7: -3 if it is below, 7 if it is above.

        >>> clamp(10)
        7
        >>> clamp(-5)
        -3
        \"\"\"
        return max(-3, min(7, x))<eos>

Every document also holds "tests" (3-6 `assert` lines, whose expected results are not all alike), "entry_point"
(the name), "template" (the template's first name, for per-template analysis) and "timeout". Instances are keyed
by (template, parameters): a validation or test function never appears in training under any name or argument
name. Held-out instances go round-robin over the templates, and no template gives more than half its parameter
settings to them. Splits are deterministic in `seed`.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from dataclasses import dataclass
from typing import Literal

from suite.errors import UsageError, check_range
from suite.sandbox import passes
from tasks.base import EOS, SPLITS, Task, check_options, draw_distinct, results_scorer, truncate
from tasks.tokenizer import MIN_BPE_VOCAB, byte_level_bpe

WORDS = ["red", "sun", "apple", "river", "go", "stone", "cloud", "bird", "a", "tree", "moon", "light", "sea", "wind",
         "is", "green", "fire", "snow", "hill", "on"]
LETTERS = "abcdefghijklmnop"
ARGUMENT_NAMES = {"list": ("xs", "values", "numbers", "data"), "int": ("x", "value", "number"),
                  "text": ("s", "text", "line"), "words": ("s", "text", "sentence")}
# the nat kinds are natural numbers of different sizes: a recurrence grows fast, digits need big numbers
ARGUMENT_NAMES.update({kind: ("n", "num", "k") for kind in ("small_nat", "nat", "big_nat")})
INPUTS = {
    "list": lambda rng: [rng.randint(-20, 20) for _ in range(rng.randint(0, 7))],
    "int": lambda rng: rng.randint(-30, 30),
    "small_nat": lambda rng: rng.randint(0, 12),
    "nat": lambda rng: rng.randint(0, 60),
    "big_nat": lambda rng: rng.randint(0, 5000),
    "text": lambda rng: "".join(rng.choice(LETTERS + "  ") for _ in range(rng.randint(0, 12))),
    "words": lambda rng: " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 6))),
}


@dataclass(frozen=True)
class Template:
    kind: str
    """The argument's kind: its possible names (ARGUMENT_NAMES) and random values (INPUTS)."""
    names: tuple[str, ...]
    space: list[dict]
    """Every parameter setting (derived text such as a signed expression included)."""
    summary: str
    """The docstring's first line; with `body`, formatted with a setting and {arg}, the argument's name."""
    body: str


def fill(text: str, setting: dict, arg: str) -> str:
    """A template text with a setting and the argument's name; twice, as settings may hold {arg} themselves."""
    return text.format(**setting, arg=arg).format(arg=arg)


def grid(**ranges) -> list[dict]:
    """Every combination of the ranges, as dicts."""
    return [dict(zip(ranges, values)) for values in itertools.product(*ranges.values())]


def signed(*terms: tuple[int, str]) -> str:
    """coefficient * term + ... as readable Python: "3 * x * x - 2 * x + 4", zero terms left out."""
    text = ""
    for coefficient, term in terms:
        if coefficient:
            value = f"{abs(coefficient)} * {term}" if term and abs(coefficient) != 1 else term or str(abs(coefficient))
            text += (" - " if coefficient < 0 else " + ") + value if text else ("-" if coefficient < 0 else "") + value
    return text or "0"


TEMPLATES = [
    Template("list", ("sum_where_mod", "total_matching", "sum_selected"),
             [p for p in grid(k=range(2, 10), r=range(9), m=range(1, 6)) if p["r"] < p["k"]],
             "Return the sum of x * {m} over the elements x of {arg} with x % {k} == {r}.",
             "    return sum(x * {m} for x in {arg} if x % {k} == {r})"),
    Template("list", ("scale_shift", "transform_all", "affine_map"),
             [{**p, "expr": signed((p["k"], "x"), (p["b"], ""))}
              for p in grid(k=[-3, -2, -1, 2, 3, 4, 5, 6, 7, 8, 9], b=range(-9, 10))],
             "Return a new list holding {expr} for every element x of {arg}.",
             "    return [{expr} for x in {arg}]"),
    Template("text", ("count_chars", "count_letters", "tally_chars"),
             [{"chars": "".join(c)} for size in (1, 2) for c in itertools.combinations(LETTERS, size)],
             "Return how many characters of {arg} are one of '{chars}'.",
             "    return sum(1 for ch in {arg} if ch in '{chars}')"),
    Template("int", ("clamp", "clip", "bound_value"),
             [{"lo": lo, "hi": lo + width} for lo in range(-10, 11) for width in range(1, 21)],
             "Return {arg} limited to the range from {lo} to {hi}: {lo} if it is below, {hi} if it is above.",
             "    return max({lo}, min({hi}, {arg}))"),
    Template("words", ("pick_words", "long_words", "select_words"),
             [{**p, "order": order, "case": case, "word": word, "words": words}
              for p in grid(n=range(1, 6), sep=[" ", "-", ",", "_", " | ", ", "])
              for order, words in (("in their order", "words"), ("in reverse order", "reversed(words)"))
              for case, word in (("unchanged", "w"), ("in upper case", "w.upper()"))],
             "Return the words of {arg} with at least {n} letters, {order} and {case}, joined by '{sep}'.",
             "    words = [{word} for w in {arg}.split() if len(w) >= {n}]\n    return '{sep}'.join({words})"),
    Template("small_nat", ("sequence_value", "recurrence", "nth_term"),
             grid(a0=range(5), a1=range(1, 6), p=range(1, 4), q=range(1, 4)),
             "Return a({arg}) for the sequence a(0) = {a0}, a(1) = {a1}, a(i) = {p} * a(i - 1) + {q} * a(i - 2).",
             "    a, b = {a0}, {a1}\n    for _ in range({arg}):\n        a, b = b, {p} * b + {q} * a\n    return a"),
    Template("list", ("running_values", "prefix_values", "accumulate"),
             [{"init": init, "what": what, "step": step} for init in range(-10, 11) for what, step in (
                 ("largest", "max(acc, x)"), ("smallest", "min(acc, x)"), ("sum", "acc + x"),
                 ("sum of the squares", "acc + x * x"))],
             "Return the list whose i-th element is the {what} of {init} and {arg}[0], ..., {arg}[i].",
             "    result, acc = [], {init}\n    for x in {arg}:\n        acc = {step}\n        result.append(acc)\n"
             "    return result"),
    Template("list", ("keep_if", "filter_values", "select_values"),
             [{"t": t, "words": words, "op": op} for t in range(-15, 16) for words, op in (
                 ("greater than", ">"), ("at least", ">="), ("less than", "<"), ("at most", "<="))],
             "Return the elements of {arg} that are {words} {t}, in their order.",
             "    return [x for x in {arg} if x {op} {t}]"),
    Template("words", ("repeat_text", "join_copies", "echo"),
             [{**p, "what": what, "form": form} for p in grid(n=range(2, 6), sep=[" ", "-", ",", "_", " | ", ", ",
                                                                                  "+", ":"])
              for what, form in (("{arg}", "{arg}"), ("{arg} in upper case", "{arg}.upper()"),
                                 ("{arg} reversed", "{arg}[::-1]"))],
             "Return {n} copies of {what}, joined by '{sep}'.",
             "    return '{sep}'.join([{form}] * {n})"),
    Template("big_nat", ("count_big_digits", "digits_at_least", "tally_digits"),
             [{"b": b, "d": d} for b in range(2, 17) for d in range(1, b)],
             "Return how many digits of {arg} (>= 0) written in base {b} are at least {d}.",
             "    count = 0\n    while {arg} > 0:\n        count += {arg} % {b} >= {d}\n        {arg} //= {b}\n"
             "    return count"),
    Template("big_nat", ("digit_power_sum", "sum_of_digit_powers", "digit_score"),
             grid(b=range(2, 27), p=range(1, 5)),
             "Return the sum of the digits of {arg} (>= 0) written in base {b}, each raised to the power {p}.",
             "    total = 0\n    while {arg} > 0:\n        total += ({arg} % {b}) ** {p}\n        {arg} //= {b}\n"
             "    return total"),
    Template("int", ("polynomial", "evaluate_poly", "quadratic"),
             [{"expr": signed((a, "{arg} * {arg}"), (b, "{arg}"), (c, ""))}
              for a in range(-5, 6) if a for b in range(-5, 6) for c in range(-5, 6)],
             "Return {expr}.",
             "    return {expr}"),
    Template("list", ("count_between", "count_in_range", "how_many_within"),
             [{"lo": lo, "hi": lo + width} for lo in range(-10, 11) for width in range(15)],
             "Return how many elements of {arg} are between {lo} and {hi}, both included.",
             "    return sum(1 for x in {arg} if {lo} <= x <= {hi})"),
    Template("list", ("strided_sum", "sum_positions", "every_kth_sum"),
             [p for p in grid(k=range(2, 6), r=range(5), m=range(1, 10)) if p["r"] < p["k"]],
             "Return the sum of {arg}[i] * {m} over the positions i with i % {k} == {r}.",
             "    return sum(x * {m} for i, x in enumerate({arg}) if i % {k} == {r})"),
    Template("text", ("encode_letters", "affine_cipher", "scramble"),
             [p for p in grid(a=[a for a in range(1, 26) if math.gcd(a, 26) == 1], b=range(26))
              if p != {"a": 1, "b": 0}],  # a = 1, b = 0 changes nothing
             "Return {arg} with every letter of alphabet index i (a = 0) replaced by the letter of index "
             "({a} * i + {b}) % 26; other characters unchanged.",
             "    return ''.join(chr(({a} * (ord(c) - 97) + {b}) % 26 + 97) if 'a' <= c <= 'z' else c for c in {arg})"),
    Template("nat", ("power_mod", "modular_power", "pow_remainder"),
             [p for p in grid(a=range(2, 10), m=range(7, 31))  # a power of a mod m that never repeats is not constant
              if math.gcd(p["a"], p["m"]) == 1 and p["a"] % p["m"] != 1],
             "Return {a} to the power {arg}, modulo {m} ({arg} >= 0).",
             "    return pow({a}, {arg}, {m})"),
    Template("text", ("strip_chars", "remove_letters", "drop_chars"),
             [{"chars": "".join(c)} for size in (1, 2) for c in itertools.combinations(LETTERS, size)],
             "Return {arg} without any of the characters '{chars}'.",
             "    return ''.join(ch for ch in {arg} if ch not in '{chars}')"),
    Template("nat", ("count_multiples", "divisible_count", "count_up_to"),
             [{"a": a, "b": b, "rule": rule, "test": test} for a, b in itertools.permutations(range(2, 13), 2)
              for rule, test in (("or by", f"or i % {b} == 0"), ("but not by", f"and i % {b} != 0"))
              if (rule == "but not by" and a % b) or (rule == "or by" and a < b)],  # never a constant 0
             "Return how many integers i with 1 <= i <= {arg} are divisible by {a} {rule} {b}.",
             "    return sum(1 for i in range(1, {arg} + 1) if i % {a} == 0 {test})"),
]


class SyntheticCode(Task):
    name = "synthetic_code"
    family = "code"
    primary = "pass_at_1"
    metrics = ("pass_at_1",)
    generation = {"until": ["\ndef", "\nclass", "\nif __name__", "\nprint", "\n#", EOS], "max_gen_toks": 128}

    def __init__(self, num_train: int = 20_000, num_val: int = 100, num_test: int = 400, seed: int = 0,
                 vocab_size: int = 2048, loss_on: Literal["answer", "all"] = "answer", timeout: float = 5.0):
        """
        Args:
            num_train: Training functions (repeats allowed, never a validation or test function).
            num_val: Validation functions, distinct.
            num_test: Test functions, distinct.
            seed: Seed of all three splits.
            vocab_size: Tokens of the byte-level BPE trained on the training text.
            loss_on: Train on the body only ("answer") or on the signature and docstring too ("all").
            timeout: Seconds each completed program (function and hidden tests) may run in the sandbox.
        """
        check_options("synthetic_code", loss_on, num_train=num_train, num_val=num_val, num_test=num_test)
        check_range("synthetic_code vocab_size", vocab_size, MIN_BPE_VOCAB)
        if not timeout > 0:
            raise UsageError(f"synthetic_code timeout={timeout!r} is out of range; allowed: > 0 seconds")
        held_out = math.ceil(num_val / len(TEMPLATES)) + math.ceil(num_test / len(TEMPLATES))
        smallest = min(len(template.space) for template in TEMPLATES)
        if held_out > smallest // 2:
            raise UsageError(f"synthetic_code num_val + num_test = {num_val + num_test} is too many: {held_out} "
                             f"held-out functions per template, and the smallest of the {len(TEMPLATES)} templates has "
                             f"{smallest} settings; allowed: at most {smallest // 2} per template, "
                             f"num_val + num_test <= {len(TEMPLATES) * (smallest // 2 - 2)}")
        self.num_train, self.num_val, self.num_test, self.seed = num_train, num_val, num_test, seed
        self.loss_on, self.timeout, self.bpe_vocab_size = loss_on, timeout, vocab_size
        self._gold_functions: dict[tuple, object] = {}

    @functools.cached_property
    def tokenizer(self):
        """Trained on first use: a data mix that includes this task trains its own instead."""
        return byte_level_bpe([doc["prompt"] + doc["answer"] for doc in self.documents("train")],
                              self.bpe_vocab_size)

    def _gold(self, template: int, setting: int):
        """The gold function of a template setting, compiled once (our own template code, run in-process)."""
        if (template, setting) not in self._gold_functions:
            namespace: dict = {}
            exec(fill(f"def gold(arg):\n{TEMPLATES[template].body}", TEMPLATES[template].space[setting], "arg"),
                 namespace)  # trusted: the template's own body, never model text
            self._gold_functions[template, setting] = namespace["gold"]
        return self._gold_functions[template, setting]

    def _instance(self, rng: random.Random, template: int, setting: int) -> tuple[tuple[int, int], dict]:
        """A function of a template setting, with a random name, argument name and examples, as (key, document)."""
        kind, parameters = TEMPLATES[template].kind, TEMPLATES[template].space[setting]
        name, arg = rng.choice(TEMPLATES[template].names), rng.choice(ARGUMENT_NAMES[kind])
        gold = self._gold(template, setting)
        shown, wanted = rng.randint(2, 3), rng.randint(3, 6)
        for _ in range(20):  # hidden tests whose results all agree would pass a body that returns a constant
            calls = self._calls(rng, kind, gold, shown + wanted)
            if len({repr(result) for _, result in list(calls.items())[shown:]}) > 1:
                break
        calls_list = list(calls.items())
        examples = "".join(f"    >>> {name}({a})\n    {result!r}\n" for a, result in calls_list[:shown])
        summary = fill(TEMPLATES[template].summary, parameters, arg)
        document = {"prompt": f'def {name}({arg}):\n    """{summary}\n\n{examples}    """\n',
                    "answer": fill(TEMPLATES[template].body, parameters, arg),
                    "tests": "".join(f"assert {name}({a}) == {result!r}\n" for a, result in calls_list[shown:]),
                    "entry_point": name, "template": TEMPLATES[template].names[0], "timeout": self.timeout}
        return (template, setting), document

    @staticmethod
    def _calls(rng: random.Random, kind: str, gold, count: int) -> dict[str, object]:
        """Up to `count` distinct random arguments (as text) and the gold function's results on them."""
        calls: dict[str, object] = {}
        for _ in range(50 * count):
            value = INPUTS[kind](rng)
            calls.setdefault(repr(value), gold(value))
            if len(calls) == count:
                break
        return calls

    def _held_out(self, rng: random.Random, count: int, exclude: set) -> tuple[list[dict], set]:
        """`count` distinct functions, none in `exclude`, round-robin over the templates; and `exclude` plus them."""
        chosen = {}
        for template, spec in enumerate(TEMPLATES):
            free = [s for s in range(len(spec.space)) if (template, s) not in exclude]
            chosen[template] = rng.sample(free, len(range(template, count, len(TEMPLATES))))
        keys = {(template, setting) for template, settings in chosen.items() for setting in settings}
        queues = {template: iter(settings) for template, settings in chosen.items()}
        documents = [self._instance(rng, i % len(TEMPLATES), next(queues[i % len(TEMPLATES)]))[1] for i in range(count)]
        return documents, exclude | keys

    def _documents(self) -> dict[str, list[dict]]:
        rng = {split: random.Random(f"synthetic_code/{self.seed}/{split}") for split in SPLITS}
        test, held_out = self._held_out(rng["test"], self.num_test, set())
        val, held_out = self._held_out(rng["val"], self.num_val, held_out)

        def sample():
            template = rng["train"].randrange(len(TEMPLATES))
            return self._instance(rng["train"], template, rng["train"].randrange(len(TEMPLATES[template].space)))

        train, _ = draw_distinct(sample, self.num_train, held_out, distinct=False, what="synthetic_code functions")
        return {"train": train, "val": val, "test": test}

    @staticmethod
    def program(doc: dict, completion: str) -> str:
        """What runs in the sandbox: the prompt, the model's body (up to a stop sequence) and the hidden tests."""
        return doc["prompt"] + truncate(completion, SyntheticCode.generation["until"]) + "\n" + doc["tests"]

    @staticmethod
    def score(doc: dict, completion: str) -> dict[str, float]:
        """pass_at_1: the completed function passes every hidden test, run in the sandbox (never in-process)."""
        return {"pass_at_1": float(passes(SyntheticCode.program(doc, completion), timeout=doc.get("timeout", 5.0)))}


process_results = results_scorer(SyntheticCode)
"""lm-eval's scorer for tasks/synthetic_code.yaml."""
