"""`aloe eval`'s metrics files against their contract (aloe.evaluate.metrics): the real writer's output
validates, a drifted file fails naming the key, and the report notes a drifted file instead of
rendering it."""

from __future__ import annotations

import shutil

import pytest

from aloe.cli import main
from aloe.evaluate.metrics import BenchmarkMetrics, EvalMetrics
from aloe.io import read_json, write_json
from aloe.report.rundir import load_run

from contract_checks import renamed_key_fails_naming_it


@pytest.fixture(scope="module")
def eval_out(tiny_checkpoint, tmp_path_factory):
    """Log-likelihood scoring on two benchmarks and generative scoring on one: between them every
    optional figure (acc_norm, unparsable) is written."""
    out = tmp_path_factory.mktemp("contract")
    assert main(["eval", "--model", str(tiny_checkpoint), "--benchmarks", "medqa,pubmedqa", "--limit", "4",
                 "--out", str(out / "loglik"), "--no-progress"]) == 0
    assert main(["eval", "--model", str(tiny_checkpoint), "--benchmarks", "mmlu_medical", "--limit", "2",
                 "--mode", "generate", "--max-new-tokens", "4", "--out", str(out / "generate"), "--no-progress"]) == 0
    return out


@pytest.mark.parametrize("kind", ["loglik", "generate"])
def test_run_evals_output_reads_through_its_contract(eval_out, kind):
    path = eval_out / kind / "metrics.json"
    m = EvalMetrics.read(path)
    limit = 4 if kind == "loglik" else 2
    assert m.limit == limit and m.benchmarks and all(b.n == limit for b in m.benchmarks.values())
    # every key the writer wrote is in the contract, and an optional figure it left out stays out
    assert m.model_dump(mode="json", exclude_unset=True) == read_json(path)
    for name, b in m.benchmarks.items():
        assert BenchmarkMetrics.read(eval_out / kind / name / "metrics.json") == b
        assert (b.acc_norm is not None, b.unparsable is not None) == (kind == "loglik", kind == "generate")


@pytest.mark.parametrize(("where", "old", "new"), [((), "macro_accuracy", "macro_acc"),
                                                   (("benchmarks", "medqa"), "accuracy", "acc")])
def test_a_renamed_key_fails_naming_it(eval_out, tmp_path, where, old, new):
    renamed_key_fails_naming_it(EvalMetrics, eval_out / "loglik" / "metrics.json", tmp_path / "metrics.json",
                                where, old, new)


def test_the_report_reads_it_and_notes_a_drifted_file(eval_out, tmp_path):
    zs = tmp_path / "eval" / "base" / "zero-shot"
    shutil.copytree(eval_out / "loglik", zs)
    run = load_run(tmp_path)
    assert run.evals["base"] == EvalMetrics.read(zs / "metrics.json") and not run.problems
    raw = read_json(zs / "metrics.json")
    raw["macro"] = raw.pop("macro_accuracy")
    write_json(zs / "metrics.json", raw)
    run = load_run(tmp_path)
    assert "base" not in run.evals
    assert any(p.startswith("eval/base/zero-shot/metrics.json: unreadable") and "macro_accuracy" in p
               for p in run.problems)


def test_a_finished_benchmark_of_another_shape_is_redone(eval_out, tmp_path, tiny_checkpoint):
    out = tmp_path / "ev"
    shutil.copytree(eval_out / "loglik", out)
    marker = read_json(out / "medqa" / "metrics.json")
    marker["acc"] = marker.pop("accuracy")
    write_json(out / "medqa" / "metrics.json", marker)
    assert main(["eval", "--model", str(tiny_checkpoint), "--benchmarks", "medqa,pubmedqa", "--limit", "4",
                 "--out", str(out), "--no-progress"]) == 0
    redone = BenchmarkMetrics.read(out / "medqa" / "metrics.json")
    assert redone.accuracy == EvalMetrics.read(eval_out / "loglik" / "metrics.json").benchmarks["medqa"].accuracy
