"""The strategy run's metrics files, as the real writer makes them, read back through their types;
a file of another shape fails naming the key (the report then lists it as unreadable)."""

from __future__ import annotations

import pytest

from aloe.cli import main
from aloe.infer.metrics import StrategyEvalMetrics, StrategyRunMetrics
from aloe.io import read_json

from contract_checks import renamed_key_fails_naming_it


@pytest.fixture
def strategy_run(tiny_checkpoint, tmp_path):
    out = tmp_path / "st"
    assert main(["infer", "run", "--model", str(tiny_checkpoint), "--strategy", "cot", "--benchmarks",
                 "mmlu_medical", "--limit", "2", "--out", str(out), "--no-progress", "--n-samples", "1",
                 "--max-new-tokens", "3", "--retry-temperatures"]) == 0
    return out


def test_the_writers_files_read_back_through_their_types(strategy_run):
    m = StrategyEvalMetrics.read(strategy_run / "metrics.json")
    assert m.strategies == ["zero-shot", "cot"] and m.limit == 2
    per = m.benchmarks["mmlu_medical"]
    assert per["zero-shot"].delta is None and per["cot"].delta is not None and per["cot"].delta_ci95 is not None
    assert m.macro["cot"] == per["cot"].accuracy
    for name in m.strategies:
        marker = StrategyRunMetrics.read(strategy_run / "mmlu_medical" / f"{name}.metrics.json")
        assert marker.strategy == name and marker.fingerprint and marker.accuracy == per[name].accuracy
    # the typed model writes back the very file it read: no key added, none lost
    assert m.model_dump(mode="json", exclude_unset=True) == read_json(strategy_run / "metrics.json")


@pytest.mark.parametrize(("file", "path", "cls"), [
    ("metrics.json", ("macro",), StrategyEvalMetrics),
    ("metrics.json", ("benchmarks", "mmlu_medical", "cot", "accuracy"), StrategyEvalMetrics),
    ("mmlu_medical/cot.metrics.json", ("fingerprint",), StrategyRunMetrics),
])
def test_a_renamed_required_key_fails_naming_it(strategy_run, tmp_path, file, path, cls):
    renamed_key_fails_naming_it(cls, strategy_run / file, tmp_path / "drifted.json", path[:-1], path[-1],
                                path[-1] + "_renamed")
