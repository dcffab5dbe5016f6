"""Choice shuffling must map every sampled answer back to the question's own letters."""

from __future__ import annotations

import pytest

from aloe.infer.config import InferConfig
from aloe.infer.shuffle import permutations, shown_options, to_original
from aloe.infer.strategies import build_strategy
from aloe.records import MCQ


def _questions(n: int = 6) -> list[MCQ]:
    qs = []
    for i in range(n):
        opts = {L: f"option {L} of question {i}" for L in "ABCD"[: 3 + i % 2]}
        qs.append(MCQ(id=f"q{i}", question=f"Which is right in question {i}?", options=opts,
                      answer="ABCD"[i % len(opts)], source="test"))
    return qs


def test_permutations_are_distinct_seeded_and_complete():
    q = _questions(2)[1]  # 4 options
    a, b = permutations(q, 5, seed=3), permutations(q, 5, seed=3)
    assert a == b
    assert len({tuple(o) for o in a}) == 5
    assert all(sorted(o) == list(q.options) for o in a)
    assert permutations(q, 5, seed=4) != a
    three = _questions(1)[0]  # 3 options: only 6 orders exist
    assert len({tuple(o) for o in permutations(three, 6, seed=0)}) == 6


def test_to_original_inverts_shown_options():
    q = _questions(2)[1]
    for order in permutations(q, 24, seed=0):
        shown = shown_options(q, order)
        for shown_letter, text in shown.items():
            assert q.options[to_original(order, shown_letter)] == text
    assert to_original(["B", "A", "C"], None) is None


def test_medprompt_votes_land_on_the_gold_letter_under_shuffling(make_reader):
    """The generator finds the gold option's text wherever the shuffle put it and answers with
    that shown letter; a wrong mapping back would scatter the votes over other letters."""
    qs = _questions()
    gold_text = {q.options[q.answer] for q in qs}
    gen = make_reader(lambda shown, _p: "Reasoning...\nAnswer: " + next(k for k, v in shown.items() if v in gold_text))
    strat = build_strategy("medprompt", InferConfig(k_shots=0, n_samples=5))
    results = strat.predict(gen, qs, pool=[], progress=False)
    for q, r in zip(qs, results, strict=True):
        assert r.letter == q.answer
        assert r.votes == {q.answer: 5}
        assert len({tuple(o) for o in r.orders}) == 5  # the options really were shuffled
    # one batched call for all samples of all questions
    assert [n for n, _ in gen.calls] == [5 * len(qs)]


@pytest.mark.parametrize("always", ["A", "B"])
def test_a_fixed_shown_letter_maps_to_each_samples_own_original(make_reader, always):
    qs = _questions()
    gen = make_reader(lambda _shown, _p: f"Answer: {always}")
    results = build_strategy("medprompt", InferConfig(k_shots=0, n_samples=4)).predict(gen, qs, progress=False)
    for r in results:
        expected = [o["AB".index(always)] for o in r.orders]
        assert sum(r.votes.values()) == 4
        assert r.votes == {L: expected.count(L) for L in set(expected)}
