import json

import pytest

from aloe.cli import main
from aloe.io import read_json


def test_eval_writes_predictions_metrics_and_table(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(["eval", "--model", str(tiny_checkpoint), "--benchmarks", "medqa,pubmedqa,headqa",
               "--limit", "6", "--shots", "1", "--out", str(out), "--no-progress"])
    assert rc == 0
    summary = read_json(out / "metrics.json")
    assert set(summary["benchmarks"]) == {"medqa", "pubmedqa", "headqa"}
    for name, m in summary["benchmarks"].items():
        preds = [json.loads(line) for line in open(out / name / "predictions.jsonl")]
        assert len(preds) == m["n"] == 6
        assert m["accuracy"] == pytest.approx(sum(p["correct"] for p in preds) / 6)
        lo, hi = m["ci95"]
        assert lo <= m["accuracy"] <= hi
    macro = sum(m["accuracy"] for m in summary["benchmarks"].values()) / 3
    assert summary["macro_accuracy"] == pytest.approx(macro)
    printed = capsys.readouterr().out
    assert "| medqa | 6 |" in printed and "macro average" in printed


def test_rerun_reuses_finished_benchmarks_without_loading_the_model(tiny_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "ev"
    args = ["eval", "--model", str(tiny_checkpoint), "--benchmarks", "medmcqa", "--limit", "4",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    first = (out / "medmcqa" / "predictions.jsonl").read_text()

    from aloe.models import hf

    def refuse(*a, **k):
        raise AssertionError("model loaded although results were complete")

    monkeypatch.setattr(hf.HFCausalLM, "from_spec", classmethod(refuse))
    assert main(args) == 0
    assert (out / "medmcqa" / "predictions.jsonl").read_text() == first
    # a changed setting is a different evaluation: it must run (and so try to load the model)
    with pytest.raises(AssertionError, match="model loaded"):
        main(args + ["--target", "text"])


def test_generate_mode_reports_unparsable(tiny_checkpoint, tmp_path):
    out = tmp_path / "gen"
    assert main(["eval", "--model", str(tiny_checkpoint), "--benchmarks", "mmlu_medical", "--limit", "3",
                 "--mode", "generate", "--max-new-tokens", "6", "--out", str(out), "--no-progress"]) == 0
    m = read_json(out / "mmlu_medical" / "metrics.json")
    preds = [json.loads(line) for line in open(out / "mmlu_medical" / "predictions.jsonl")]
    assert m["unparsable"] == sum(p["pred"] is None for p in preds)
    assert all("response" in p for p in preds)
    assert (out / "cache" / "completions.sqlite").is_file()


@pytest.mark.parametrize("argv,message", [
    (["--benchmarks", "medqa,nope"], "unknown benchmark 'nope'"),
    (["--data-dir", "/nonexistent-dir"], "no data for this split under /nonexistent-dir"),
    (["--model", "not a model"], "model spec 'not a model'"),
    (["--limit", "0"], "--limit must be at least 1"),
])
def test_bad_input_is_one_clear_error(argv, message, capsys):
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
