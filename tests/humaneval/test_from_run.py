"""`aloe human-eval build RUN_DIR --models base,aligned` on a recipe run, and its votes in the run's report."""

from __future__ import annotations

import json

from test_report_page import parse

from aloe.cli import main
from aloe.humaneval.store import Store, read_comparisons
from aloe.report import render_report


def _answers(run_dir, label: str) -> dict[str, str]:
    """set/id -> answer, from the open-ended stage's own predictions files."""
    return {f"{p.parent.name}/{row['id']}": row["answer"]
            for p in (run_dir / "eval" / label / "openended").glob("*/predictions.jsonl")
            for row in map(json.loads, p.read_text().splitlines())}


def test_build_from_a_run_dir_and_read_the_votes_back_into_the_report(run_dir, capsys):
    db = run_dir / "humaneval" / "votes.sqlite"
    section = parse(render_report(run_dir)).sections["humaneval"]
    assert "no comparison set built" in section
    assert f"aloe human-eval build {run_dir} --models base,aligned" in section
    assert f"aloe human-eval add-rater NAME --db {db}" in section

    assert main(["human-eval", "build", str(run_dir), "--models", "base,aligned", "--limit", "5"]) == 0
    assert f"in {db}" in capsys.readouterr().out
    items = read_comparisons(run_dir / "humaneval" / "comparisons.jsonl")
    assert len(items) == 5
    base, aligned = _answers(run_dir, "base"), _answers(run_dir, "aligned")
    for item_id, _, answers in items:  # the run's own answers, paired by question
        assert answers == {"base": base[item_id], "aligned": aligned[item_id]}
    section = parse(render_report(run_dir)).sections["humaneval"]
    assert "no votes yet" in section and "aloe human-eval serve" in section

    assert main(["human-eval", "add-rater", "Dr Ada", "--db", str(db)]) == 0
    store = Store(db)
    try:
        for choice in ("aligned", "aligned", "tie"):  # aligned wins twice, one tie
            task = store.next_task("Dr Ada")[0]
            side = "tie" if choice == "tie" else "A" if task.model_a == choice else "B"
            store.vote("Dr Ada", task.id, side)
    finally:
        store.close()

    cells = parse(render_report(run_dir)).cells
    # a tie is half a win: aligned (1 + 1 + 0.5) / 3, base 0.5 / 3
    assert cells["human|aligned|n"] == cells["human|base|n"] == "3"
    assert cells["human|aligned|win_rate"] == "83.3" and cells["human|base|win_rate"] == "16.7"
    assert cells["human|aligned|ci95"] == "50.0–100.0" and cells["human|base|ci95"] == "0.0–50.0"
    # Bradley-Terry with one pseudo-tie: aligned 3 wins to base's 1, strengths 3/4 and 1/4
    assert cells["human|aligned|bradley_terry"] == "0.750" and cells["human|base|bradley_terry"] == "0.250"
    assert "aloe human-eval build" not in parse(render_report(run_dir)).sections["humaneval"]


def test_build_names_the_missing_label(run_dir, capsys):
    assert main(["human-eval", "build", str(run_dir), "--models", "base,sft"]) == 2
    err = capsys.readouterr().err
    assert str(run_dir / "eval" / "sft" / "openended" / "metrics.json") in err
    assert "labels with answers: aligned, base" in err
    assert main(["human-eval", "build", str(run_dir)]) == 2
    assert "--models LABEL_A,LABEL_B" in capsys.readouterr().err
