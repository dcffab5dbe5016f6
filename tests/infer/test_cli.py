"""`aloe infer run` end to end on the tiny random model: table, predictions, and a free rerun."""

from __future__ import annotations

import json

from aloe.cli import main


def test_infer_run_writes_predictions_and_a_table_and_reruns_from_cache(tmp_path, tiny_model, smollm_tokenizer,
                                                                         capsys):
    model_dir = tmp_path / "tiny"
    tiny_model.save_pretrained(model_dir)
    smollm_tokenizer.save_pretrained(model_dir)
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["infer", "run", "--model", str(model_dir), "--strategy", "cot,sc-cot", "--benchmarks", "mmlu_medical",
            "--limit", "3", "--n-samples", "2", "--max-new-tokens", "4", "--retry-temperatures",
            "--cache-dir", str(cache), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    table = (out / "results.md").read_text()
    assert all(f"| mmlu_medical | {s} | 3 |" in table for s in ("zero-shot", "cot", "sc-cot"))
    rows = [json.loads(x) for x in (out / "mmlu_medical" / "sc-cot.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["responses"]) == 2 for r in rows)
    first = [r["responses"] for r in rows]
    capsys.readouterr()
    assert main(argv) == 0  # the rerun is answered from the completion cache: identical samples
    assert [json.loads(x)["responses"] for x in (out / "mmlu_medical" / "sc-cot.jsonl").read_text().splitlines()] == first
