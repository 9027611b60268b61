"""foresight checkpoints as lm-eval models: `foresight` (a checkpoint's next-token model) and `foresight-oracle`
(a test double that answers with each document's gold answer, or nothing, for `foresight eval --selfcheck`).

Importing this module registers both with lm-eval, after which `lm_eval.simple_evaluate(model="foresight",
model_args="checkpoint=runs/x/checkpoints/last.ckpt", ...)` works like any lm-eval model."""

from __future__ import annotations

import logging

import lm_eval.evaluator
import lm_eval.models  # noqa: F401  lm-eval fills its model registry only while it is empty: fill it before ours
import torch
import torch.nn.functional as F
from lm_eval.api.model import LM, TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from suite import checkpoints
from suite.decoding import DecodeStats, generate
from suite.errors import UsageError, check_range
from suite.plan import check_rule, plan_decode
from suite.provenance import git_commit
from suite.quantize import KVQuant
from tasks.base import truncate


def _foresight_commit() -> str | None:
    """The commit of the foresight code that scored the results, for lm-eval's `git_hash`: lm-eval runs `git
    describe` in the working folder instead, which records whatever repository the user stands in and prints
    `fatal: not a git repository` outside one."""
    return git_commit()["commit"]


lm_eval.evaluator.get_git_commit_hash = _foresight_commit


def usable_device(device: str | None) -> str:
    """`device`, or the CPU where it names a GPU this machine lacks (lm-eval's command line asks for cuda:0 unless
    told otherwise; its `hf` model falls back the same way)."""
    if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
        fallback = "cuda" if torch.cuda.is_available() else "cpu"
        if device is not None:
            logging.getLogger(__name__).warning("device %r is not available here; using %r", device, fallback)
        return fallback
    return str(device)


def flag(name: str, value) -> bool:
    """A boolean lm-eval model argument: true or false (a string from its command line, or a bool from Python)."""
    if str(value).lower() not in ("true", "false"):
        raise UsageError(f"{name}={value!r} is not a boolean; allowed: true, false")
    return str(value).lower() == "true"


def kv_quant_of(bits, group, rotate, seed=0) -> KVQuant | None:
    """The KV-cache quantiser of lm-eval model arguments (strings from its command line, or values from Python)."""
    def number(name: str, value):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise UsageError(f"{name}={value!r} is not a whole number; allowed: {name}=N") from None

    return KVQuant.of(number("kv_bits", bits), None if group in (None, "", "None") else number("kv_group", group),
                      flag("kv_rotate", rotate), number("kv_seed", seed))


@register_model("foresight")
class ForesightLM(TemplateLM):
    """A checkpoint's trunk and tokenizer. Loglikelihoods are batched (right padding is harmless to a causal
    model: pads come after every scored token); generation is batched over prompts of equal token length,
    KV-cached, greedy unless `do_sample` asks for sampling (pass@k).

    `speculative=true` decodes greedy requests with the objective's heads (`suite.decoding`): the same text, fewer
    trunk passes; `decode_stats` adds up what decoding took. Sampled requests are decoded plainly. `graphs=true`
    decodes with static-shaped passes, CUDA graphs on a GPU (`generate(graphs=True)`): the same text.

    `kv_bits=B` (1, 2, 4, 8; 16, the default, is none), `kv_group=G`, `kv_rotate=true`, `kv_seed=S` (the rotation's):
    every attention reads keys and values as a B-bit cache would give them back (`suite.quantize`), generation and
    log-likelihoods alike.

    `progress`, a callable, hears (requests done, requests) after each batch.

    `decode=head_k` or `decode=vote` writes greedy answers from the heads' own drafts (`suite.plan.plan_decode`), not
    with the next-token head: plan decoding, which says whether the model knows an answer its next-token head does
    not write. `decode=next` (the default) is next-token decoding."""

    def __init__(self, checkpoint: str, batch_size: int | str = 16, device: str | None = "cpu",
                 max_length: int = 2048, dtype: str = "float32", speculative: bool | str = False,
                 kv_bits: int | str = 16, kv_group: int | str | None = None, kv_rotate: bool | str = False,
                 kv_seed: int | str = 0, graphs: bool | str = False, decode: str = "next", progress=None, **kwargs):
        super().__init__()
        device = usable_device(device)
        batch_size = 16 if batch_size in (None, "auto") else int(batch_size)
        check_range("batch_size", batch_size, 1)
        self.speculative, self.graphs = flag("speculative", speculative), flag("graphs", graphs)
        self.kv_quant = kv_quant_of(kv_bits, kv_group, kv_rotate, kv_seed)
        self.decode = str(decode)
        if self.speculative or self.decode != "next":
            model, checkpoint_data = checkpoints.load_model(checkpoint)
            self.trunk = model.trunk
            self.objective = model.objective.to(device=device, dtype=getattr(torch, dtype)).eval()
        else:
            self.trunk, checkpoint_data = checkpoints.load_trunk(checkpoint)
            self.objective = checkpoints.answering_objective(checkpoint_data)
        if self.decode != "next":
            check_rule(self.objective, self.decode)
        self.decode_stats = DecodeStats()
        self.tokenizer = checkpoints.load_tokenizer(checkpoint_data)
        pretrained = bool((checkpoint_data.get("hyper_parameters") or {}).get("init_from"))
        if not checkpoints.vocabulary_fits(self.tokenizer.get_vocab_size(), self.trunk.config.vocab_size, pretrained):
            raise UsageError(f"checkpoint {checkpoint!r} has a tokenizer of {self.tokenizer.get_vocab_size()} tokens "
                             f"but a model of {self.trunk.config.vocab_size}; allowed: a tokenizer and model that "
                             "were trained together")
        self.trunk.to(device=device, dtype=getattr(torch, dtype)).eval()
        max_length = min(max_length, self.trunk.config.max_positions or max_length)  # windows the trunk can run
        if self.kv_quant is not None:
            self.kv_quant.check(self.trunk.config.head_dim)
            self.trunk.kv_quant = self.kv_quant  # every cache and pass reads compressed keys and values
        self.where, self.batch_size, self.max_length = torch.device(device), batch_size, max_length
        self.progress = progress  # progress(done, total) after each batch of requests (a sweep point's own bar)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.token_to_id("<eos>")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string).ids

    def tok_decode(self, ids: list[int], **kwargs) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    @torch.inference_mode()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        for start in tqdm(range(0, len(order), self.batch_size), disable=disable_tqdm, desc="loglikelihood"):
            chunk = order[start: start + self.batch_size]
            rows = []
            for i in chunk:
                _, context, continuation = requests[i]
                whole = (context + continuation)[-(self.max_length + 1):]
                rows.append((whole[:-1], len(continuation)))
            width = max(len(inputs) for inputs, _ in rows)
            batch = torch.zeros(len(rows), width, dtype=torch.long)
            for r, (inputs, _) in enumerate(rows):
                batch[r, : len(inputs)] = torch.tensor(inputs)
            logprobs = F.log_softmax(self.trunk.logits(self.trunk(batch.to(self.where))).float(), dim=-1)
            for r, (i, (inputs, count)) in enumerate(zip(chunk, rows)):
                target = torch.tensor(requests[i][2][-count:], device=self.where)
                scores = logprobs[r, len(inputs) - count: len(inputs)]
                total = scores.gather(1, target[:, None]).sum().item()
                results[i] = (total, bool((scores.argmax(-1) == target).all()))
            if self.progress is not None:
                self.progress(min(start + self.batch_size, len(order)), len(order))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for n, (text,) in enumerate(req.args for req in requests):
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    self.tok_encode(text), self.prefix_token_id, self.max_length, context_len=1)):
                windows.append(((text, ""), context, continuation))
                owners.append(n)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)):
            totals[owner] += logprob
        return totals

    @torch.inference_mode()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        encoded = [self.tok_encode(req.args[0])[-self.max_length:] for req in requests]
        for i, req in enumerate(requests):
            kwargs = req.args[1]
            key = (len(encoded[i]), repr(sorted(kwargs.items())))
            groups.setdefault(key, []).append(i)
        progress = tqdm(total=len(requests), disable=disable_tqdm, desc="generate_until")
        for (_, _), members in groups.items():
            kwargs = dict(requests[members[0]].args[1])
            until = [s for s in kwargs.get("until", []) if s and s != "<eos>"]  # <eos> itself stops by id
            max_new = int(kwargs.get("max_gen_toks", 256))
            temperature = float(kwargs.get("temperature", 1.0)) if kwargs.get("do_sample") else 0.0
            for start in range(0, len(members), self.batch_size):
                chunk = members[start: start + self.batch_size]
                prompts = torch.tensor([encoded[i] for i in chunk], device=self.where)

                def stop(row: int, new: list[int]) -> bool:
                    return any(s in self.tok_decode(new) for s in until)

                if self.decode != "next":
                    if temperature:
                        raise UsageError(f"decode={self.decode} writes greedy answers from the heads' drafts, and "
                                         "this task samples (do_sample); allowed: decode=next for sampled tasks")
                    new = plan_decode(self.objective, self.trunk, prompts, max_new, self.decode)
                else:
                    new, stats = generate(self, prompts, max_new, self.speculative and temperature == 0,
                                          self.eot_token_id, stop if until else None, temperature, graphs=self.graphs)
                    self.decode_stats.add(stats)
                for i, ids in zip(chunk, new.tolist()):
                    results[i] = truncate(self.tok_decode(ids[: ids.index(self.eot_token_id)]
                                                     if self.eot_token_id in ids else ids), until)
                progress.update(len(chunk))
                if self.progress is not None:
                    self.progress(progress.n, len(requests))
        progress.close()
        return results


@register_model("foresight-oracle")
class OracleLM(LM):
    """Answers every generation request with its document's gold answer (answer="gold") or nothing
    (answer="empty"): what a scoring pipeline must rate 100% and 0%."""

    def __init__(self, answer: str = "gold", **kwargs):
        super().__init__()
        self.answer = answer

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        return [req.doc["answer"] if self.answer == "gold" else "" for req in requests]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("the oracle checks generation tasks only")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("the oracle checks generation tasks only")
