"""Self-consistency rounds: batching, retries at rising temperature, waves for duplicates, voting."""

from __future__ import annotations

from aloe.infer.config import InferConfig
from aloe.infer.sampling import majority
from aloe.infer.strategies import build_strategy
from aloe.records import MCQ

QS = [MCQ(id=f"q{i}", question=f"Question {i}?", options={"A": "x", "B": "y", "C": "z"}, answer="B",
          source="t") for i in range(3)]


def test_majority_counts_and_breaks_ties_by_first_vote():
    assert majority(["B", None, "A", "B"]) == ("B", {"A": 1, "B": 2})
    assert majority(["C", "A", "A", "C"])[0] == "C"
    assert majority([None, None]) == (None, {})


def test_unparsable_samples_are_retried_at_rising_temperature(make_reader):
    def reply(_shown, params):
        return "I am not sure." if params.temperature < 1.0 else "Answer: B"

    gen = make_reader(reply)
    cfg = InferConfig(n_samples=3, temperature=0.7, retry_temperatures=[0.9, 1.2, 1.5])
    results = build_strategy("sc-cot", cfg).predict(gen, QS, progress=False)
    assert all(r.letter == "B" and r.votes == {"B": 3} for r in results)
    assert all(len(s) == 3 for r in results for s in r.responses)  # T=0.7, 0.9 failed; 1.2 parsed
    temps = sorted({p.temperature for _, p in gen.calls})
    assert temps == [0.7, 0.9, 1.2]  # the 1.5 round was never needed


def test_identical_prompts_go_in_waves_with_distinct_seeds(make_reader):
    """sc-cot samples of one question share a prompt; within one call they would share a cache key."""
    gen = make_reader(lambda _s, _p: "Answer: A")
    build_strategy("sc-cot", InferConfig(n_samples=4)).predict(gen, QS, progress=False)
    assert [n for n, _ in gen.calls] == [3, 3, 3, 3]  # each wave batches all questions
    assert len({p.seed for _, p in gen.calls}) == 4


def test_greedy_strategies_take_one_sample_at_temperature_zero(make_reader):
    gen = make_reader(lambda _s, _p: "Answer: C")
    results = build_strategy("cot").predict(gen, QS, progress=False)
    assert [r.votes for r in results] == [{"C": 1}] * 3
    assert gen.calls[0][0] == 3 and gen.calls[0][1].temperature == 0.0
    gen = make_reader(lambda _s, _p: "B")
    zs = build_strategy("zero-shot").predict(gen, QS, progress=False)
    assert [r.letter for r in zs] == ["B"] * 3
    assert gen.calls[0][1].max_new_tokens == InferConfig().direct_max_new_tokens
