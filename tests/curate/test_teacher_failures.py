"""Issue 18: a failing teacher is not a finished curate stage. Answered work is kept and a rerun pays
only for what is missing; `cot.on_teacher_error` and `cot.min_verified` make the policy explicit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from aloe.cli import main
from aloe.curate.config import CurateConfig, SourceConfig
from aloe.curate.cot import CotFailed
from aloe.curate.pipeline import curate
from aloe.curate.sources import load_source
from aloe.io import iter_jsonl

COT_SOURCE = {"name": "medqa_dev", "format": "medqa", "path": "medqa/dev.jsonl", "cot": True, "limit": 6}


@pytest.fixture(scope="module")
def mcqs() -> list[Any]:
    items = [i.mcq for i in load_source(SourceConfig(**COT_SOURCE))]  # type: ignore[arg-type]
    assert len(items) == 6
    return items


def _curate(teacher_url: str, **cot: Any) -> dict[str, Any]:
    return {"sources": [
                {"name": "medquad", "format": "medquad", "path": "medquad/medquad_answered.jsonl", "limit": 20},
                COT_SOURCE,
                {"name": "hh", "format": "hh_rlhf", "path": "hh_rlhf_harmless/harmless-base_test.jsonl.gz",
                 "group": "general", "limit": 10}],
            "decontam": {"benchmarks": "medqa"},
            # one attempt per request: a fault is a failed request
            "cot": {"teacher": f"openai:{teacher_url}#scripted", "max_items": 6, "tries": 1, "max_retries": 0,
                    "timeout": 5, **cot},
            "mix": {"validation_fraction": 0.1, "tokenizer": None}}


def _cot_rows(dataset: Path) -> list[dict[str, Any]]:
    rows = [r for f in ("train.jsonl", "validation.jsonl") for _, r in iter_jsonl(dataset / f)]
    return [r for r in rows if r["meta"]["group"] == "cot"]


def test_a_teacher_failing_every_request_fails_the_run_and_a_healthy_rerun_asks_again(serve_teacher, mcqs, tmp_path):
    teacher = serve_teacher(script={m.question: [m.answer] for m in mcqs},
                            faults={m.question: [500] * 50 for m in mcqs})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "faults", "curate": _curate(teacher.url)}))
    run_dir = tmp_path / "run"
    args = ["run", str(recipe), "--only", "curate", "--run-dir", str(run_dir)]
    with pytest.raises(CotFailed, match=r"6 of 6 requests failed \(.*HTTP 500.*\); 0 answered and cached, "
                                        r"0 chains verified; 6 of 6 items left: rerun to resume"):
        main(args)
    stage = json.loads((run_dir / "manifest.json").read_text())["stages"][0]
    assert stage["status"] == "failed" and "6 of 6 requests failed" in stage["error"]
    assert not (run_dir / "curate" / "_stage.json").exists() and not (run_dir / "curate" / "dataset").exists()
    assert (run_dir / "curate" / "cot_partial.jsonl").read_text() == ""
    assert len(teacher.log) == 6

    teacher.faults.clear()
    assert main(args) == 0
    assert len(teacher.log) == 12  # the rerun asked the teacher again, for every item
    assert json.loads((run_dir / "manifest.json").read_text())["stages"][0]["status"] == "done"
    assert len(_cot_rows(run_dir / "curate" / "dataset")) == 6
    assert not (run_dir / "curate" / "cot_partial.jsonl").exists()


def test_answered_requests_are_kept_and_a_rerun_asks_only_for_the_failed_ones(serve_teacher, mcqs, tmp_path):
    broken = {m.question for k, m in enumerate(mcqs) if k % 3 == 2}  # a third of the requests, by content
    teacher = serve_teacher(script={m.question: [m.answer] for m in mcqs}, faults={q: [500] * 50 for q in broken})
    cfg = CurateConfig.model_validate(_curate(teacher.url))
    out = tmp_path / "curate"
    with pytest.raises(CotFailed, match=r"2 of 6 requests failed .*; 4 answered and cached, 4 chains verified; "
                                        r"2 of 6 items left") as err:
        curate(cfg, out)
    assert f"the 4 chains verified so far: {out / 'cot_partial.jsonl'}" in err.value.__notes__
    partial = [r for _, r in iter_jsonl(out / "cot_partial.jsonl")]
    assert len(partial) == 4 and all(r["meta"]["cot_chain"].endswith("Answer: " + r["mcq"]["answer"]) for r in partial)
    assert not (out / "dataset").exists()

    teacher.faults.clear()
    before = len(teacher.log)
    curate(cfg, out)
    asked = [r["question"] for r in teacher.log[before:]]
    assert sorted(asked) == sorted(" ".join(q.split()) for q in broken)  # only what was missing, once each
    assert len(_cot_rows(out / "dataset")) == 6
    card = json.loads((out / "data_card.json").read_text())["cot"]
    assert (card["verified"], card["failed"], card["cache_hits"], card["cache_misses"]) == (6, 0, 4, 2)


def test_continue_finishes_without_the_failed_items_and_the_card_counts_them(serve_teacher, mcqs, tmp_path):
    broken = {m.question for k, m in enumerate(mcqs) if k % 3 == 2}
    teacher = serve_teacher(script={m.question: [m.answer] for m in mcqs}, faults={q: [500] * 50 for q in broken})
    out = tmp_path / "curate"
    curate(CurateConfig.model_validate(_curate(teacher.url, on_teacher_error="continue")), out)
    assert len(_cot_rows(out / "dataset")) == 4
    card = json.loads((out / "data_card.json").read_text())
    cot = card["cot"]
    assert {k: cot[k] for k in ("on_teacher_error", "min_verified", "attempted", "requests", "answered", "failed",
                                "verified", "never_matched")} == {
        "on_teacher_error": "continue", "min_verified": 0, "attempted": 6, "requests": 6, "answered": 4, "failed": 2,
        "verified": 4, "never_matched": 0}
    assert "HTTP 500" in cot["error"]
    assert next(s for s in card["steps"] if s["step"] == "cot")["dropped"] == {"cot_teacher_error": {"medqa_dev": 2}}
    md = (out / "data_card.md").read_text()
    assert "dropped: 0 that never did, 2 with no answer from the teacher (4 of 6 requests answered)" in md
    assert "on_teacher_error `continue`, min_verified 0" in md


def test_fewer_verified_chains_than_min_verified_fails_whatever_the_error_policy(serve_teacher, mcqs, tmp_path):
    # the teacher answers every request, but two items never reach gold
    wrong = {m.question: [next(x for x in m.options if x != m.answer)] for m in mcqs[:2]}
    teacher = serve_teacher(script={**{m.question: [m.answer] for m in mcqs}, **wrong})
    out = tmp_path / "curate"
    cfg = CurateConfig.model_validate(_curate(teacher.url, on_teacher_error="continue", min_verified=5))
    with pytest.raises(CotFailed, match=r"cot: 4 chains verified, fewer than cot.min_verified 5 "
                                        r"\(6 MCQs sent to .*: 2 never matched gold, 0 got no answer\)"):
        curate(cfg, out)
    assert len(list(iter_jsonl(out / "cot_partial.jsonl"))) == 4
    curate(cfg.model_copy(update={"cot": cfg.cot.model_copy(update={"min_verified": 4})}), out)
    assert len(_cot_rows(out / "dataset")) == 4
