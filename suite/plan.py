"""Where a path-finding model keeps its plan: every head's predictions of every answer token, and decoding with the
heads' own predictions.

A multi-token model can know the path in a head that next-token decoding never reads: on the star graph, a head
that predicts the first step from the goal token, three positions before it is written, while the next-token head
guesses between the arms. Two measures tell where the plan is:

- **Each head's teacher-forced accuracy** on each answer token, from the position k before it (head 1 from the
  token before, head k from k tokens before): `task.head_accuracy`. The first step (the task's branch token, the
  source's successor in a forward answer) is the one that needs planning.
- **Plan decoding**, which is NOT next-token decoding: the answer is written left to right, each token taken from
  the heads' drafts (`Objective.draft_logits`, which read x_{<=t} alone) instead of the next-token head's. Rule
  `head_k` takes answer token i from head k at the position k before it, made before tokens i-k+1 .. i-1 were
  written; `vote` adds every head's log-probabilities for token i (each from its own position). It tells "the model
  knows the path" apart from "its next-token head uses it".

Both run during validation (`ObjectiveLM`, logged as `val/<task>/plan/head_k/token_i`, `val/<task>/first_step/
head_k` and `val/<task>/decode_<rule>/<metric>`) and on the test split at the end of a sweep point
(`plan_report`, the row's `plan`)."""

from __future__ import annotations

import torch

from suite.checkpoints import task_options, trained_on
from suite.errors import UsageError

VOTE = "vote"


def supports(task) -> bool:
    """Whether the task scores plans: a fixed layout of prompt and answer and a branch token (the path tasks)."""
    return callable(getattr(task, "head_accuracy", None))


def drafting_heads(objective) -> int:
    """How many tokens ahead the objective's drafts reach (1: the next-token head alone)."""
    return objective.n if callable(getattr(objective, "draft_logits", None)) else 1


def decode_rules(objective) -> list[str]:
    """The plan-decoding rules an objective can be read with: head_2 .. head_n and vote; none with one head."""
    n = drafting_heads(objective)
    return [f"head_{k}" for k in range(2, n + 1)] + ([VOTE] if n > 1 else [])


def check_rule(objective, rule: str) -> None:
    allowed = decode_rules(objective)
    if rule not in allowed:
        raise UsageError(f"plan decoding rule {rule!r} is not one of {type(objective).__name__}'s; allowed: "
                         f"{', '.join(allowed) or 'none (it drafts with the next-token head alone)'}")


@torch.no_grad()
def head_predictions(objective, trunk, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Every head's greedy prediction at every position, teacher-forced as in training [B, T, heads]: head k at t
    predicts x_{t+k} (the objective's `head_logits` of what the trunk reads: a teacherless model's dummies)."""
    return objective.head_logits(trunk, objective.inputs(tokens, mask)).argmax(-1)


@torch.no_grad()
def plan_decode(objective, trunk, prompts: torch.Tensor, length: int, rule: str) -> torch.Tensor:
    """`length` tokens after `prompts` [B, P], each from the heads' drafts by `rule` (head_k or vote; see the
    module docstring): [B, length]. One pass over the whole sequence per token, without a cache."""
    check_rule(objective, rule)
    start, ids = prompts.shape[1], prompts
    heads = range(2, objective.n + 1) if rule == VOTE else [int(rule.removeprefix("head_"))]
    for i in range(length):
        drafts = objective.draft_logits(trunk, ids)  # [B, start + i, n, V]: head k at t drafts x_{t+k}
        at = start + i  # the position of the token being written
        chosen = [k for k in ([1, *heads] if rule == VOTE else heads) if at - k >= 0]
        scores = sum(drafts[:, at - k, k - 1].float().log_softmax(-1) for k in chosen)
        ids = torch.cat([ids, scores.argmax(-1, keepdim=True)], dim=1)
    return ids[:, start:]


def plan_scores(objective, trunk, task, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-example scores [B] of a batch of a path task: plan/head_k/token_i (head k right on answer token i,
    teacher-forced), first_step/head_k (the branch token), and decode_<rule>/<metric> (the task's own scores of the
    answer plan decoding writes)."""
    tokens = batch["tokens"]
    right = task.head_accuracy(head_predictions(objective, trunk, tokens, batch.get("loss_mask")), tokens)
    scores = {f"plan/head_{k + 1}/token_{i}": right[:, k, i] for k in range(right.shape[1])
              for i in range(right.shape[2])}
    scores |= {f"first_step/head_{k + 1}": right[:, k, task.arm_index] for k in range(right.shape[1])}
    for rule in decode_rules(objective):
        def written(prompts, length, rule=rule):
            return plan_decode(objective, trunk, prompts, length, rule)

        decoded = task.evaluate(written, batch)
        scores |= {f"decode_{rule}/{name}": value for name, value in decoded.items() if name != "random_arm_acc"}
    return scores


@torch.no_grad()
def plan_report(objective, trunk, task, split: str = "test", batch_size: int = 250) -> dict:
    """`plan_scores` over a whole split, as a sweep row keeps it: {"examples", "tokens" (the answer tokens'
    names), "first_step_token", "heads": {head_k: [accuracy per answer token]}, "first_step": {head_k: accuracy},
    "decode": {rule: {metric: value}}}."""
    examples = task.examples(split)
    device = trunk.embed.weight.device
    totals: dict[str, float] = {}
    count = len(examples.tokens)
    for start in range(0, count, batch_size):
        batch = {"tokens": examples.tokens[start: start + batch_size].to(device),
                 "loss_mask": examples.loss_mask[start: start + batch_size].to(device),
                 "prompt_len": examples.prompt_len[start: start + batch_size].to(device)}
        for key, values in plan_scores(objective, trunk, task, batch).items():
            totals[key] = totals.get(key, 0.0) + float(values.float().sum())
    means = {key: value / count for key, value in totals.items()}
    heads = sorted({int(key.split("/")[1].removeprefix("head_")) for key in means if key.startswith("plan/")})
    report = {"examples": count, "tokens": task.answer_token_names(), "first_step_token": task.arm_index,
              "heads": {f"head_{k}": [means[f"plan/head_{k}/token_{i}"] for i in range(task.answer_len)]
                        for k in heads},
              "first_step": {f"head_{k}": means[f"first_step/head_{k}"] for k in heads}, "decode": {}}
    for key, value in means.items():
        if key.startswith("decode_"):
            rule, metric = key.removeprefix("decode_").split("/")
            report["decode"].setdefault(rule, {})[metric] = value
    return report


def plan_lines(found: dict[str, dict]) -> list[str]:
    """Where each head keeps the plan, per path task: the first step as every head predicts it (teacher-forced),
    and plan decoding's path accuracy."""
    lines = []
    for task, plan in found.items():
        step = plan["tokens"][plan["first_step_token"]]
        heads = ", ".join(f"{head.replace('_', ' ')} {value:.3f}" for head, value in plan["first_step"].items())
        lines.append(f"\n{task}: the first step ({step}) as each head predicts it, teacher-forced: {heads}")
        if plan["decode"]:
            rules = ", ".join(f"{rule} {scores.get('path_acc', float('nan')):.3f}"
                              for rule, scores in plan["decode"].items())
            lines.append(f"{task}: path accuracy of plan decoding (not next-token decoding): {rules}")
    return lines


def plans(checkpoint: str, data: dict, names: list[str], device: str = "cpu") -> dict[str, dict]:
    """{task: `suite.plan.plan_report` on its test split} for the path tasks among `names` the checkpoint trained
    on, read left to right: every head's teacher-forced accuracy on every answer token, and plan decoding."""
    import tasks
    from suite import checkpoints

    found, model = {}, None
    for name in names:
        if name not in tasks.TASKS or name not in trained_on(data) or (data.get("datamodule_hyper_parameters")
                                                                       or {}).get("reverse"):
            continue
        task = tasks.build(name, **task_options(data, name))
        if supports(task):
            model = model or checkpoints.load_readable(checkpoint)[0]
            found[name] = plan_report(model.objective.to(device).eval(), model.trunk.to(device).eval(), task)
    return found
