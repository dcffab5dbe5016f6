"""Relaxed perplexity scores the reference answer only, given the question prompt."""

from __future__ import annotations

import math

import pytest
import torch

from aloe.evaluate.openended.datasets import OpenQA
from aloe.evaluate.openended.perplexity import lead_ins, relaxed_perplexity

ANSWER = "Cross-linking of DNA by the platinum compound."


def _hand_ppl(model, tok, context: str, continuation: str) -> tuple[float, float, int]:
    """(perplexity of the continuation, perplexity of the context, continuation length) from one plain
    forward pass over the whole sequence, tokenised as lm-eval does."""
    ctx_ids = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    cont_ids = whole[len(ctx_ids):]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([whole])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    token_lp = logprobs[:-1].gather(1, torch.tensor(whole[1:]).unsqueeze(1)).squeeze(1)
    cont_lp = token_lp[len(ctx_ids) - 1:]
    ctx_lp = token_lp[:len(ctx_ids) - 1]
    return math.exp(-float(cont_lp.mean())), math.exp(-float(ctx_lp.mean())), len(cont_ids)


def test_perplexity_is_over_the_reference_answer_not_the_prompt(tiny_lm, tiny_model, smollm_tokenizer):
    item = OpenQA("q1", "What mechanism explains the benefit of cisplatin in bladder cancer?", ANSWER, "test")
    got = relaxed_perplexity(tiny_lm, [item], variants=("plain",), progress=False)["q1"]
    answer_ppl, prompt_ppl, n = _hand_ppl(tiny_model, smollm_tokenizer, f"Question: {item.question}\nAnswer:",
                                          " " + ANSWER)
    assert got["n_tokens"] == n
    assert got["perplexity"] == pytest.approx(answer_ppl, rel=1e-4)
    # A random model's perplexities differ by token, so scoring the prompt would give another figure.
    assert abs(got["perplexity"] - prompt_ppl) > 1e-3 * prompt_ppl
    assert got["relaxed_perplexity"] == got["perplexity"]  # one variant, no lead-ins


def test_token_count_depends_on_the_answer_only(tiny_lm, smollm_tokenizer):
    short = OpenQA("short", "Mechanism of cisplatin?", ANSWER, "test")
    vignette = "A 67-year-old man with transitional cell carcinoma of the bladder " * 12 + "Why?"
    long = OpenQA("long", vignette, ANSWER, "test")
    other = OpenQA("other", "Mechanism of cisplatin?", ANSWER + " It also binds proteins in the cell.", "test")
    res = relaxed_perplexity(tiny_lm, [short, long, other], variants=("chat", "plain"), progress=False)
    assert res["short"]["n_tokens"] == res["long"]["n_tokens"]
    assert res["other"]["n_tokens"] > res["short"]["n_tokens"]
    assert res["short"]["n_tokens"] <= len(smollm_tokenizer(" " + ANSWER, add_special_tokens=False)["input_ids"]) + 1
    # Different questions condition the same answer differently.
    assert res["short"]["perplexity"] != pytest.approx(res["long"]["perplexity"], rel=1e-6)


def test_relaxed_takes_the_best_prompt_and_lead_in(tiny_lm):
    item = OpenQA("q", "Mechanism of cisplatin?", ANSWER, "test")
    own = {"q": "Cisplatin is a platinum drug. It works as follows. More text here."}
    res = relaxed_perplexity(tiny_lm, [item], variants=("chat", "plain"), own_answers=own, progress=False)["q"]
    per_variant = {}
    for v in ("chat", "plain"):
        per_variant[v] = relaxed_perplexity(tiny_lm, [item], variants=(v,), progress=False)["q"]["perplexity"]
    assert res["perplexity"] == pytest.approx(per_variant["chat"])  # the strict figure: first variant
    assert res["relaxed_perplexity"] <= min(per_variant.values()) + 1e-9
    assert res["best"] in {"chat", "plain", "chat+lead1", "chat+lead2", "plain+lead1", "plain+lead2"}


def test_lead_ins_cut_after_sentences():
    assert lead_ins("First one. Second one! Third one? Rest", 2) == ["First one. ", "First one. Second one! "]
    assert lead_ins("Only one sentence.", 2) == []  # nothing follows it: no lead-in
    assert lead_ins("", 2) == []


def test_items_without_reference_are_skipped(tiny_lm):
    res = relaxed_perplexity(tiny_lm, [OpenQA("x", "Why?", None, "t"), OpenQA("y", "Why?", "Because.", "t")],
                             variants=("plain",), progress=False)
    assert set(res) == {"y"}
