"""`aloe human-eval build` pairs two real `aloe eval-open` runs into input that `serve` loads."""

from __future__ import annotations

import json
import shutil

import pytest
from scripted_openai import ScriptedOpenAIServer

from aloe.cli import main
from aloe.humaneval.build import build_comparisons
from aloe.humaneval.store import Store, read_comparisons

# No references: the pairing needs none, and eval-open then skips the embedding model (seconds to load).
QUESTIONS = [
    {"id": "a", "question": "What causes wheezing in asthma?"},
    {"id": "b", "question": "Which drug treats heart failure?"},
    {"id": "c", "question": "Is ibuprofen safe in pregnancy?"},
    {"id": "d", "question": "What does insulin do?"},
]


def _reply(body) -> str:
    """Each served model answers in its own words; model-b has nothing to say about pregnancy."""
    question = body["messages"][-1]["content"].split("\n\n")[-1]
    if body["model"] == "model-b" and "pregnancy" in question:
        return " "
    return f"{body['model']} on '{question}': see a clinician."


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs of two models on the same set, and of model-b on its first 2 questions only, written by eval-open."""
    root = tmp_path_factory.mktemp("runs")
    data = root / "mine.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    server = ScriptedOpenAIServer(_reply)
    out = {"models": (server.spec("model-a"), server.spec("model-b"))}
    try:
        for name, model, extra in [("a", "model-a", []), ("b", "model-b", []), ("short", "model-b", ["--limit", "2"])]:
            out[name] = root / f"run-{name}"
            assert main(["eval-open", "--model", server.spec(model), "--sets", f"jsonl:{data}",
                         "--out", str(out[name]), "--no-progress", *extra]) == 0
    finally:
        server.close()
    return out


def _answers(run) -> dict[str, str]:
    lines = (run / "mine" / "predictions.jsonl").read_text().splitlines()
    return {row["id"]: row["answer"] for row in map(json.loads, lines)}


def test_build_pairs_answers_and_serve_loads_them(runs, tmp_path, capsys):
    items = tmp_path / "items.jsonl"
    assert main(["human-eval", "build", str(runs["a"]), str(runs["b"]), "--out", str(items)]) == 0
    assert "3 comparisons" in capsys.readouterr().out  # c: model-b's answer is empty, nothing to compare
    comparisons = read_comparisons(items)  # the validator serve runs on its input
    model_a, model_b = runs["models"]
    answers_a, answers_b = _answers(runs["a"]), _answers(runs["b"])
    assert [c[0] for c in comparisons] == ["mine/a", "mine/b", "mine/d"]
    for (_, question, answers), q in zip(comparisons, [QUESTIONS[i] for i in (0, 1, 3)], strict=True):
        assert question == q["question"]
        assert answers == {model_a: answers_a[q["id"]], model_b: answers_b[q["id"]]}
        assert answers[model_a].startswith("model-a on") and answers[model_b].startswith("model-b on")
    store = Store(tmp_path / "votes.sqlite")
    assert store.load(comparisons) == 3  # one pair task per question
    store.add_rater("Dr Ana")
    task, done, total = store.next_task("Dr Ana")
    assert (done, total) == (0, 3) and {task.model_a, task.model_b} == {model_a, model_b}
    store.close()


def test_sample_is_seeded_and_a_set_folder_works(runs):
    first, _ = build_comparisons(runs["a"], runs["b"], n=2, seed=3)
    again, _ = build_comparisons(runs["a"], runs["b"] / "mine", n=2, seed=3)  # one set's folder as run B
    assert len(first) == 2 and first == again
    everything, counts = build_comparisons(runs["a"], runs["b"], n=99)
    assert len(everything) == 3 and counts == {"shared": 4, "empty_answer_skipped": 1, "written": 3,
                                               "only_in_a": 0, "only_in_b": 0}


def test_runs_that_do_not_share_questions_are_refused(runs, tmp_path):
    with pytest.raises(ValueError) as err:
        build_comparisons(runs["a"], runs["short"])
    msg = str(err.value)
    assert str(runs["short"] / "mine" / "predictions.jsonl") in msg
    assert "lacks 2 id(s)" in msg and "c, d" in msg
    rows, counts = build_comparisons(runs["a"], runs["short"], allow_partial=True)
    assert [r["id"] for r in rows] == ["mine/a", "mine/b"] and counts["only_in_a"] == 2


def test_same_model_needs_names_and_changed_questions_are_refused(runs, tmp_path):
    with pytest.raises(ValueError, match="give them distinct names"):
        build_comparisons(runs["a"], runs["a"])
    rows, _ = build_comparisons(runs["a"], runs["a"], names=("first", "second"))
    assert set(rows[0]["answers"]) == {"first", "second"}
    edited = tmp_path / "edited"
    shutil.copytree(runs["b"], edited)
    preds = edited / "mine" / "predictions.jsonl"
    preds.write_text(preds.read_text().replace("heart failure", "kidney failure"))
    with pytest.raises(ValueError, match=r"question 'b' of set 'mine' differs"):
        build_comparisons(runs["a"], edited)
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        build_comparisons(runs["a"], tmp_path)
