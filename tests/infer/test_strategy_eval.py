"""`aloe infer run` and run_strategy_eval on the tiny random model."""

from __future__ import annotations

import json

import pytest

from aloe.cli import main
from aloe.mcq.benchmarks import BENCHMARKS
from aloe.infer.strategy_eval import (
    StrategyEvalRequest,
    parse_strategies,
    run_strategy_eval,
)
from aloe.infer.config import InferConfig
from aloe.io import read_json

KNOBS = ["--n-samples", "2", "--max-new-tokens", "4", "--retry-temperatures"]


def test_infer_run_writes_per_strategy_files_with_deltas_and_reruns_without_the_model(
        tiny_checkpoint, tmp_path, monkeypatch, capsys):
    out = tmp_path / "st"
    argv = ["infer", "run", "--model", str(tiny_checkpoint), "--strategy", "cot,sc-cot", "--benchmarks", "mmlu_medical",
            "--limit", "3", "--out", str(out), "--no-progress", *KNOBS]
    assert main(argv) == 0
    summary = read_json(out / "metrics.json")
    assert summary["strategies"] == ["zero-shot", "cot", "sc-cot"]
    per = summary["benchmarks"]["mmlu_medical"]
    for name in summary["strategies"]:
        rows = [json.loads(x) for x in (out / "mmlu_medical" / f"{name}.jsonl").read_text().splitlines()]
        marker = read_json(out / "mmlu_medical" / f"{name}.metrics.json")
        assert len(rows) == per[name]["n"] == 3
        assert per[name]["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 3)
        assert marker["fingerprint"] and marker["accuracy"] == per[name]["accuracy"]
        assert summary["macro"][name] == per[name]["accuracy"]
    base = [json.loads(x)["correct"] for x in (out / "mmlu_medical" / "zero-shot.jsonl").read_text().splitlines()]
    sc = [json.loads(x)["correct"] for x in (out / "mmlu_medical" / "sc-cot.jsonl").read_text().splitlines()]
    assert per["sc-cot"]["delta"] == pytest.approx((sum(sc) - sum(base)) / 3)
    assert len(per["sc-cot"]["delta_ci95"]) == 2 and "delta" not in per["zero-shot"]
    assert "| mmlu_medical | sc-cot | 3 |" in capsys.readouterr().out
    first = (out / "mmlu_medical" / "sc-cot.jsonl").read_text()

    from aloe.models import hf

    def refuse(*a, **k):
        raise AssertionError("model loaded although results were complete")

    monkeypatch.setattr(hf.HFCausalLM, "from_spec", classmethod(refuse))
    assert main(argv) == 0
    assert (out / "mmlu_medical" / "sc-cot.jsonl").read_text() == first
    # another knob value is another evaluation: it must run, and so load the model
    with pytest.raises(AssertionError, match="model loaded"):
        main(argv[:-len(KNOBS)] + ["--n-samples", "3", "--max-new-tokens", "4", "--retry-temperatures"])


def test_run_strategy_eval_reuses_a_loaded_generator(tiny_lm, tiny_checkpoint, tmp_path, monkeypatch):
    from aloe.models import hf
    from aloe.models.backends import HFGenerator

    gen = HFGenerator(tiny_lm, "tiny")
    monkeypatch.setattr(hf.HFCausalLM, "from_spec", classmethod(lambda *a, **k: pytest.fail("model loaded again")))
    cfg = InferConfig(n_samples=2, max_new_tokens=3, retry_temperatures=[], k_shots=1,
                      index_dir=tmp_path / "idx")
    summary = run_strategy_eval(StrategyEvalRequest(
        model=str(tiny_checkpoint), benchmarks=[BENCHMARKS["medqa"]], strategies=["medprompt"], config=cfg,
        out_dir=tmp_path / "o", limit=2, progress=False, generator=gen))
    assert list(summary["benchmarks"]["medqa"]) == ["zero-shot", "medprompt"]
    rows = [json.loads(x) for x in (tmp_path / "o" / "medqa" / "medprompt.jsonl").read_text().splitlines()]
    assert all(len(r["shot_ids"]) == 1 and len(r["orders"]) == 2 for r in rows)
    assert (tmp_path / "o" / "cache" / "completions.sqlite").is_file()
    assert "medprompt" in (tmp_path / "o" / "results.md").read_text()


def test_strategy_names_are_validated():
    assert parse_strategies("all")[0] == "zero-shot" and len(parse_strategies("all")) == 6
    assert parse_strategies("medprompt,zero-shot,cot") == ["zero-shot", "medprompt", "cot"]
    with pytest.raises(ValueError, match="unknown strategy 'medprompt-rag'.*medprompt\\+rag"):
        parse_strategies("cot,medprompt-rag")


def test_infer_run_rejects_a_bad_strategy_before_loading_anything(tmp_path, capsys):
    assert main(["infer", "run", "--strategy", "fancy", "--benchmarks", "medqa", "--out", str(tmp_path)]) == 2
    assert "unknown strategy 'fancy'; known: zero-shot, cot" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
