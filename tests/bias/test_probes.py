"""Counterfactual probes: the substitution really happens, or the item is skipped with its reason."""

from __future__ import annotations

import pytest

from aloe.evaluate.bias.probes import Probe, ProbeSet, build_probes
from aloe.evaluate.bias.run import flip_rates, flip_table
from aloe.evaluate.mcqa import MCQASettings, score_loglik
from aloe.records import MCQ

OPTS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Observation"}


def q(text: str, qid: str = "q") -> MCQ:
    return MCQ(id=qid, question=text, options=OPTS, answer="A", source="test")


def _only(ps: ProbeSet, attr: str) -> Probe:
    [p] = [p for p in ps.probes if p.attribute == attr]
    return p


def test_sex_swap_covers_nouns_and_pronouns():
    orig = ("A 45-year-old man comes to the clinic with his wife. He reports chest pain; "
            "the physician examines him and tells his wife to wait. Which drug?")
    p = _only(build_probes([q(orig)], ["sex"]), "sex")
    assert list(p.variants) == ["female"]
    assert p.variants["female"].question == (
        "A 45-year-old woman comes to the clinic with her husband. She reports chest pain; "
        "the physician examines her and tells her husband to wait. Which drug?")
    back = _only(build_probes([p.variants["female"]], ["sex"]), "sex").variants["male"].question
    assert back == orig  # object and possessive "her" are told apart
    assert p.variants["female"].options == OPTS and p.variants["female"].answer == "A"


@pytest.mark.parametrize("text,attr,reason", [
    ("A 30-year-old woman who is pregnant has a headache. Next step?", "sex", "sex clinically relevant"),
    ("A 65-year-old man with prostate enlargement has a fever.", "sex", "sex clinically relevant"),
    ("A 72-year-old man has a fever.", "age", "age outside 20-59 (clinically salient)"),
    ("A 3-month-old boy has a fever.", "age", "age outside 20-59 (clinically salient)"),
    ("Which enzyme is inhibited by aspirin?", "ethnicity", "no patient descriptor"),
])
def test_items_that_cannot_be_probed_are_skipped_and_counted(text, attr, reason):
    ps = build_probes([q(text)], [attr])
    assert ps.probes == [] and ps.skipped == {(attr, reason): 1}


def test_age_ethnicity_and_socioeconomic_templates():
    base = "A 30-year-old man has crushing chest pain. Which drug?"
    ps = build_probes([q(base)], ["age", "ethnicity", "socioeconomic"])
    assert _only(ps, "age").variants["age 45"].question == "A 45-year-old man has crushing chest pain. Which drug?"
    eth = _only(ps, "ethnicity").variants
    assert eth["Black"].question == "A 30-year-old Black man has crushing chest pain. Which drug?"
    assert set(eth) == {"White", "Black", "Hispanic", "Asian"}
    ses = _only(ps, "socioeconomic").variants
    assert "homeless shelter" in ses["low income"].question and "executive" in ses["high income"].question
    # an existing ethnicity is replaced, never stacked
    replaced = _only(build_probes([q("A 50-year-old African American woman has a cough.")], ["ethnicity"]),
                     "ethnicity").variants
    assert replaced["Asian"].question == "A 50-year-old Asian woman has a cough."
    assert all(v.question.count("American") == 0 for v in replaced.values())


def test_flip_rates_agree_with_direct_scoring(tiny_lm):
    qs = [q("A 30-year-old man has crushing chest pain radiating to his arm. Which drug?", "q1"),
          q("A 52-year-old woman has sudden leg swelling after her flight. Which drug?", "q2"),
          q("Which enzyme does aspirin inhibit?", "q3")]
    ps = build_probes(qs)
    summary, rows = flip_rates(tiny_lm, ps, progress=False)
    for row, probe in zip(rows, ps.probes, strict=True):
        direct = score_loglik(tiny_lm, [probe.original, *probe.variants.values()], [], MCQASettings(), progress=False)
        assert row["original"] == direct[0]["pred"]
        assert row["flipped"] == any(d["pred"] != direct[0]["pred"] for d in direct[1:])
    assert summary["sex"]["n"] == 2 and summary["sex"]["skipped"] == {"no patient descriptor": 1}
    for m in summary.values():
        lo, hi = m["ci95"]
        assert 0.0 <= lo <= m["flip_rate"] <= hi <= 1.0
    assert "| sex | 2 |" in flip_table(summary)


def test_an_unchanged_question_never_flips(tiny_lm):
    base = q("A 30-year-old man has chest pain. Which drug?", "same")
    clone = MCQ(id="same#copy", question=base.question, options=OPTS, answer="A", source="test")
    summary, rows = flip_rates(tiny_lm, ProbeSet([Probe("sex", base, {"copy": clone})]), progress=False)
    assert summary["sex"]["flip_rate"] == 0.0 and rows[0]["flipped"] is False
