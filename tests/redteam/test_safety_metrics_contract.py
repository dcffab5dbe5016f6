"""The safety metrics files against their contracts (aloe.redteam.metrics): the real writers' output
validates, a drifted file fails naming the key, the writer refuses a key outside the contract, and
the report notes a drifted file instead of rendering it."""

from __future__ import annotations

import shutil

import pytest

from aloe.io import read_json, write_json
from aloe.models.backends import HFGenerator
from aloe.models.generator import GenParams
from aloe.redteam.metrics import OverRefusalMetrics, SafetyMetrics
from aloe.redteam.overrefusal import load_overrefusal_prompts, make_detector, run_overrefusal
from aloe.redteam.run import run_redteam
from aloe.redteam.styles import load_styles, select_styles, split_styles
from aloe.report.rundir import load_run
from aloe.safety.prompts import load_prompts, sample_per_source
from aloe.safety.verdicts import RefusalJudge

from contract_checks import renamed_key_fails_naming_it

PARAMS = GenParams(max_new_tokens=8)


@pytest.fixture(scope="module")
def target(tiny_model, smollm_tokenizer):
    from aloe.models.hf import HFCausalLM

    return HFGenerator(HFCausalLM(tiny_model, smollm_tokenizer, batch_size=4), "tiny")


@pytest.fixture(scope="module")
def safety_dir(target, tmp_path_factory):
    """safety/base of a run directory, as the recipe runner writes it (its meta keys included)."""
    registry = load_styles()
    split = split_styles(list(registry.values()), test_families=["encoding"])
    styles = select_styles(registry, ["none", "base64"])
    out = tmp_path_factory.mktemp("run") / "safety" / "base"
    run_redteam(sample_per_source(load_prompts(), 2, seed=0), styles, target, RefusalJudge(), out, PARAMS,
                seen_styles=[s.name for s in split.train],
                meta={"label": "base", "held_out_families": sorted(split.test_families), "seed": 0})
    run_overrefusal(load_overrefusal_prompts(n_xstest=2, n_medical=2), target, out / "overrefusal", PARAMS,
                    make_detector(), meta={"label": "base"})
    return out


def test_the_writers_output_reads_through_its_contract(safety_dir):
    m = SafetyMetrics.read(safety_dir / "metrics.json")
    assert m.meta.label == "base" and m.meta.judge == "refusal" and set(m.by_seen) == {"seen", "unseen"}
    assert m.model_dump(mode="json", exclude_unset=True) == read_json(safety_dir / "metrics.json")
    o = OverRefusalMetrics.read(safety_dir / "overrefusal" / "metrics.json")
    assert o.overall.n == 4 and o.meta.xstest_safe == 2 and o.detector_agreement is not None
    assert o.model_dump(mode="json", exclude_unset=True) == read_json(safety_dir / "overrefusal" / "metrics.json")


@pytest.mark.parametrize(("contract", "rel", "where", "old", "new"), [
    (SafetyMetrics, "metrics.json", ("overall",), "asr", "rate"),
    (SafetyMetrics, "metrics.json", (), "by_style", "by_styles"),
    (OverRefusalMetrics, "overrefusal/metrics.json", ("meta",), "xstest_safe", "xstest"),
])
def test_a_renamed_key_fails_naming_it(safety_dir, tmp_path, contract, rel, where, old, new):
    renamed_key_fails_naming_it(contract, safety_dir / rel, tmp_path / "drifted.json", where, old, new)


def test_the_writer_refuses_a_meta_key_outside_the_contract(target, tmp_path):
    with pytest.raises(ValueError, match="meta.lable"):
        run_redteam(sample_per_source(load_prompts(), 1, seed=0), select_styles(load_styles(), ["none"]), target,
                    RefusalJudge(), tmp_path, PARAMS, meta={"lable": "base"})
    assert not (tmp_path / "metrics.json").exists()


def test_the_report_reads_them_and_notes_a_drifted_file(safety_dir, tmp_path):
    run_dir = safety_dir.parent.parent
    run = load_run(run_dir)
    assert run.safety["base"] == SafetyMetrics.read(safety_dir / "metrics.json") and not run.problems
    assert run.overrefusal["base"].overall.n == 4
    drifted = tmp_path / "drifted"
    shutil.copytree(run_dir, drifted)
    raw = read_json(drifted / "safety/base/metrics.json")
    del raw["meta"]["judge"]
    write_json(drifted / "safety/base/metrics.json", raw)
    run = load_run(drifted)
    assert "base" not in run.safety and "base" in run.overrefusal
    assert any(p.startswith("safety/base/metrics.json: unreadable") and "meta.judge" in p for p in run.problems)
