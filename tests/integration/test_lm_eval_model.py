"""The `foresight` lm-eval model against direct computation: batched loglikelihoods (right padding must not
matter), rolling loglikelihood, and generation with stop strings."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance

from objectives import ParallelMTP, Teacherless
from suite import ObjectiveLM, TaskData
from suite.errors import UsageError
from suite.lm_eval_model import ForesightLM
from tests.conftest import naive_greedy


def train(tmp_path_factory, objective=None):
    L.seed_everything(0)
    data = TaskData(options={"num_train": 640, "num_val": 32, "num_test": 32}, batch_size=32)
    lm = ObjectiveLM("nano", objective=objective, vocab_size=data.vocab_size, lr=1e-2, warmup_steps=1)
    trainer = L.Trainer(max_steps=30, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(lm, data)
    path = tmp_path_factory.mktemp("lm") / "model.ckpt"
    trainer.save_checkpoint(path)
    return path, data.task


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path, task = train(tmp_path_factory)
    return ForesightLM(str(path), batch_size=3), task


def request(kind: str, args: tuple, doc=None) -> Instance:
    return Instance(request_type=kind, doc=doc or {}, arguments=args, idx=0)


def direct_logprob(lm: ForesightLM, context: list[int], continuation: list[int]) -> float:
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logprobs = F.log_softmax(lm.trunk.logits(lm.trunk(ids[:, :-1])), dim=-1)[0]
    return sum(logprobs[len(context) - 1 + i, token].item() for i, token in enumerate(continuation))


def test_loglikelihood_equals_direct_computation_whatever_the_batch(model):
    lm, task = model
    docs = task.documents("test")[:7]  # 7 requests in batches of 3: padding and sorting are exercised
    requests = [request("loglikelihood", (doc["prompt"], " " + doc["answer"])) for doc in docs]
    requests.append(request("loglikelihood", ("3 4 |", " 5")))  # a much shorter one, padded in its batch
    results = lm.loglikelihood(requests, disable_tqdm=True)
    for req, (logprob, greedy_match) in zip(requests, results):
        context, continuation = req.args
        context_ids = lm.tok_encode(context)
        continuation_ids = lm.tok_encode(context + continuation)[len(context_ids):]
        assert logprob == pytest.approx(direct_logprob(lm, context_ids, continuation_ids), abs=1e-4)
        assert isinstance(greedy_match, bool)


def test_rolling_loglikelihood_scores_every_token_after_the_prefix(model):
    lm, task = model
    text = task.documents("test")[0]["prompt"]
    ids = lm.tok_encode(text)
    expected = direct_logprob(lm, [lm.eot_token_id], ids)
    (total,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", (text,))], disable_tqdm=True)
    assert total == pytest.approx(expected, abs=1e-4)


def test_generate_until_is_greedy_decoding_cut_at_stops(model):
    lm, task = model
    docs = task.documents("test")[:5]
    kwargs = {"until": ["<eos>"], "max_gen_toks": 6, "do_sample": False}
    answers = lm.generate_until([request("generate_until", (d["prompt"], kwargs), d) for d in docs],
                                disable_tqdm=True)
    prompts = torch.tensor([lm.tok_encode(d["prompt"]) for d in docs])
    expected = naive_greedy(lm.trunk, prompts, 6, lm.eot_token_id)
    for answer, ids in zip(answers, expected.tolist()):
        ids = ids[: ids.index(lm.eot_token_id)] if lm.eot_token_id in ids else ids
        assert answer == lm.tok_decode(ids)
    node = docs[0]["answer"].split()[1]  # stop at the first path node after the source: the text before it
    (cut,) = lm.generate_until([request("generate_until", (docs[0]["prompt"], {**kwargs, "until": [node]}))],
                               disable_tqdm=True)
    assert node not in cut and answers[0].startswith(cut)


def test_speculative_generation_gives_the_same_text_with_the_heads_drafting(tmp_path_factory):
    path, task = train(tmp_path_factory, ParallelMTP(n=3))
    plain, fast = ForesightLM(str(path), batch_size=2), ForesightLM(str(path), batch_size=2, speculative="true")
    docs = task.documents("test")[:5]
    kwargs = {"until": ["<eos>"], "max_gen_toks": 8, "do_sample": False}
    requests = [request("generate_until", (d["prompt"], kwargs), d) for d in docs]
    assert fast.generate_until(requests, disable_tqdm=True) == plain.generate_until(requests, disable_tqdm=True)
    assert plain.decode_stats.drafted == [] and plain.decode_stats.tokens_per_pass == 1.0
    assert len(fast.decode_stats.drafted) == 2 and fast.decode_stats.drafted[0] > 0
    assert fast.decode_stats.row_tokens == plain.decode_stats.row_tokens
    assert fast.decode_stats.trunk_passes <= plain.decode_stats.trunk_passes
    text = plain.generate_until(requests, disable_tqdm=True)
    for eager in (plain, fast):  # static-shaped passes: the same text and figures
        static = ForesightLM(str(path), batch_size=2, speculative=str(eager.speculative), graphs="true")
        assert static.generate_until(requests, disable_tqdm=True) == text
        calls = 2 if eager is plain else 1  # plain has answered the requests twice
        assert static.decode_stats.row_tokens * calls == eager.decode_stats.row_tokens
        assert static.decode_stats.trunk_passes * calls == eager.decode_stats.trunk_passes
        assert static.decode_stats.accepted == eager.decode_stats.accepted
    with pytest.raises(UsageError, match="graphs='yes' is not a boolean; allowed: true, false"):
        ForesightLM(str(path), graphs="yes")
    with pytest.raises(UsageError, match="speculative='maybe' is not a boolean; allowed: true, false"):
        ForesightLM(str(path), speculative="maybe")
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["hyper_parameters"]["objective"] = {"class_path": "fsp_bow", "init_args": {"tau": 3}}
    torch.save(checkpoint, path.with_name("fsp.ckpt"))
    with pytest.raises(UsageError, match="trained with fsp_bow, which has no heads that draft tokens"):
        ForesightLM(str(path.with_name("fsp.ckpt")), speculative=True)


def test_plan_decoding_answers_with_the_heads_drafts(tmp_path_factory):
    """decode=vote and decode=head_k write what `plan_decode` writes from the prompt's ids, cut at <eos>; other rules,
    objectives without drafting heads and sampled tasks are refused in one line."""
    from suite.plan import plan_decode

    path, task = train(tmp_path_factory, ParallelMTP(n=3))
    docs = task.documents("test")[:6]
    kwargs = {"until": ["<eos>"], "max_gen_toks": 6, "do_sample": False}
    requests = [request("generate_until", (d["prompt"], kwargs), d) for d in docs]
    for rule in ("vote", "head_3"):
        lm = ForesightLM(str(path), batch_size=4, decode=rule)
        texts = lm.generate_until(requests, disable_tqdm=True)
        for doc, text in zip(docs, texts):
            ids = torch.tensor([lm.tok_encode(doc["prompt"])])
            written = plan_decode(lm.objective, lm.trunk, ids, 6, rule)[0].tolist()
            eos = lm.eot_token_id
            assert text == lm.tok_decode(written[: written.index(eos)] if eos in written else written)
    with pytest.raises(UsageError, match="plan decoding rule 'head_4' is not one of ParallelMTP's; allowed: head_2, "
                                         "head_3, vote$"):
        ForesightLM(str(path), decode="head_4")
    sampled = [request("generate_until", (docs[0]["prompt"], {**kwargs, "do_sample": True, "temperature": 1.0}))]
    with pytest.raises(UsageError, match="decode=vote writes greedy answers from the heads' drafts, and this task "
                                         "samples"):
        ForesightLM(str(path), decode="vote").generate_until(sampled, disable_tqdm=True)


def test_a_teacherless_checkpoint_answers_in_one_pass_as_it_was_trained(tmp_path_factory):
    path, task = train(tmp_path_factory, Teacherless())
    lm = ForesightLM(str(path), batch_size=2)
    docs = task.documents("test")[:4]
    kwargs = {"until": ["<eos>"], "max_gen_toks": 6, "do_sample": False}
    answers = lm.generate_until([request("generate_until", (d["prompt"], kwargs), d) for d in docs],
                                disable_tqdm=True)
    prompts = torch.tensor([lm.tok_encode(d["prompt"]) for d in docs])
    with torch.no_grad():  # the prompt and 5 dummies (<pad>) in one pass; position P - 1 + j gives token j
        read = torch.cat([prompts, torch.zeros(len(docs), 5, dtype=torch.long)], dim=1)
        expected = lm.trunk.logits(lm.trunk(read))[:, prompts.shape[1] - 1:].argmax(-1)
    for answer, ids in zip(answers, expected.tolist()):
        ids = ids[: ids.index(lm.eot_token_id)] if lm.eot_token_id in ids else ids
        assert answer == lm.tok_decode(ids)
    assert lm.decode_stats.trunk_passes == 2  # one pass per batch of 2 prompts, not one per token
