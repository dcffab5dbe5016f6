import numpy as np
import pytest
import torch

from aloe.mcq.answers import extract_answer
from aloe.evaluate.mcqa import MCQASettings, score_generate, score_loglik
from aloe.stats import bootstrap_ci, macro_average, summarize
from aloe.models.backends import HFGenerator
from aloe.models.hf import HFCausalLM
from aloe.records import MCQ


def reference_loglik(lm: HFCausalLM, context: str, continuation: str) -> tuple[float, bool]:
    """A plain full forward pass over context + continuation, the way lm-eval scores it."""
    ((ctx, cont),) = lm._encode_pairs([(context, continuation)])
    with torch.no_grad():
        logits = lm.model(torch.tensor([ctx + cont])).logits[0].float()
    lp = torch.log_softmax(logits, -1)[len(ctx) - 1:len(ctx) + len(cont) - 1]
    toks = torch.tensor(cont)
    return float(lp[torch.arange(len(cont)), toks].sum()), bool((lp.argmax(-1) == toks).all())


QUESTIONS = [
    ("Question: A 45-year-old man has crushing chest pain radiating to the left arm. Diagnosis?\nAnswer:",
     [" Myocardial infarction", " Pneumothorax", " Reflux disease with erosive esophagitis", " A"]),
    ("Question: Which vitamin deficiency causes scurvy?\nAnswer:", [" A", " B", " C", " D"]),
    ("Context: short.   ", [" yes", " no", " maybe so"]),  # trailing spaces move to the continuation
    ("", [" an unconditioned text"]),  # empty context: conditioned on the BOS/EOS token
]


@pytest.mark.parametrize("share_prefix", [True, False])
def test_packed_prefix_scores_equal_plain_forward(tiny_model, smollm_tokenizer, share_prefix):
    lm = HFCausalLM(tiny_model, smollm_tokenizer, batch_size=3, share_prefix=share_prefix)
    requests = [(ctx, c) for ctx, conts in QUESTIONS for c in conts]
    got = lm.loglikelihood(requests, progress=False)
    for (ctx, cont), (lp, greedy) in zip(requests, got, strict=True):
        ref_lp, ref_greedy = reference_loglik(lm, ctx, cont)
        assert abs(lp - ref_lp) < 1e-4, (ctx[:30], cont, lp, ref_lp)
        assert greedy == ref_greedy


def test_packing_really_groups_options_into_one_row(tiny_model, smollm_tokenizer, monkeypatch):
    lm = HFCausalLM(tiny_model, smollm_tokenizer, batch_size=64)
    rows = []
    original = lm._score_packed
    monkeypatch.setattr(lm, "_score_packed", lambda batch: rows.append(len(batch)) or original(batch))
    lm.loglikelihood([(ctx, c) for ctx, conts in QUESTIONS[:2] for c in conts], progress=False)
    assert rows == [2]  # two questions, eight options: two packed sequences in one forward pass


def test_greedy_flag_marks_the_models_own_greedy_token(tiny_model, smollm_tokenizer):
    from aloe.models.hf import _Group

    lm = HFCausalLM(tiny_model, smollm_tokenizer)
    ctx = smollm_tokenizer("Question: hello\nAnswer:", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        nxt = int(tiny_model(torch.tensor([ctx])).logits[0, -1].argmax())
    ((greedy, other),) = lm._score_packed([_Group(ctx, [[nxt], [(nxt + 1) % len(smollm_tokenizer)]], [0, 1])])
    assert greedy[1] is True and other[1] is False
    assert greedy[0] > other[0]


def mcq(i: int, answer: str = "B") -> MCQ:
    return MCQ(id=f"q{i}", question=f"Which organ pumps blood? ({i})", answer=answer, source="t",
               options={"A": "Liver", "B": "Heart", "C": "Kidney", "D": "Lung"})


def test_score_loglik_predictions_and_norm(tiny_lm):
    qs = [mcq(i) for i in range(3)]
    for target in ("letter", "text"):
        preds = score_loglik(tiny_lm, qs, [mcq(9)], MCQASettings(target=target, shots=1), progress=False)
        for p in preds:
            assert p["pred"] == "ABCD"[int(np.argmax(p["loglik"]))]
            assert p["correct"] == (p["pred"] == "B")
            assert len(p["loglik"]) == 4


def test_chat_loglik_uses_template(tiny_lm):
    from aloe.evaluate.mcqa import loglik_requests

    (ctx, cont), *_ = loglik_requests(mcq(0), [], MCQASettings(chat=True), tiny_lm)
    assert ctx.endswith("<|im_start|>assistant\n") and cont == "A"


def test_generate_counts_unparsable_and_never_guesses(tiny_lm):
    gen = HFGenerator(tiny_lm, "tiny")
    preds = score_generate(gen, [mcq(0), mcq(1)], [], MCQASettings(mode="generate", max_new_tokens=8, chat=True))
    m = summarize(preds)
    for p in preds:
        assert p["parsed"] == (p["pred"] is not None)
        assert p["correct"] == (p["pred"] == "B")
    assert m["unparsable"] == sum(not p["parsed"] for p in preds)


OPTS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "None of the above"}


@pytest.mark.parametrize("text,letter", [
    ("Reasoning... Answer: C", "C"),
    ("The answer is (B).", "B"),
    ("**Answer: A**", "A"),
    ("The correct option is B\nFinal answer: D", "D"),
    ("B. Heparin, because", "B"),
    ("after thinking\nC\n", "C"),
    ("Heparin is the drug of choice here.", "B"),
    ("Answer: E", None),  # not an option of this question
    ("The answer is a difficult one", None),  # lower-case article, not a letter
    ("Heparin or warfarin could both work", None),  # quotes two options: ambiguous
    ("", None),
])
def test_extract_answer(text, letter):
    assert extract_answer(text, OPTS) == letter


def test_bootstrap_ci_and_macro():
    x = np.array([1] * 60 + [0] * 40)
    lo, hi = bootstrap_ci(x, seed=0)
    assert lo < 0.6 < hi and 0.48 < lo and hi < 0.72
    assert bootstrap_ci(x, seed=0) == (lo, hi)
    assert macro_average({"a": {"accuracy": 0.2}, "b": {"accuracy": 0.6}}) == pytest.approx(0.4)
