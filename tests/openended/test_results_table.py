"""The results table says over how many questions a reference figure is averaged."""

from __future__ import annotations

from aloe.evaluate.openended.run import results_markdown, summarize_open


def test_figures_over_fewer_questions_show_their_n():
    rows = [{"specialty": "x", "rouge_l": 0.5, "verdict": 1}, {"specialty": "x", "verdict": None},
            {"specialty": "x", "verdict": 0}]
    m = summarize_open(rows)
    table = results_markdown({"model": "m", "judge": "j", "sets": {"s": m}, "specialties": {"x": m}})
    row = next(line for line in table.splitlines() if line.startswith("| s |"))
    assert "0.500 (0.500-0.500) [n=1]" in row  # ROUGE-L: one question of three had a reference
    assert "0.500 (0.000-1.000) [1 unparsable]" in row and "[n=2]" not in row  # judge: 2 parsed, 1 unparsable
