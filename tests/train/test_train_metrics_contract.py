"""The trainers' metrics files against their contracts (aloe.train.metrics): the real writers' output
validates, a drifted file fails naming the key, and the report notes a drifted file instead of
rendering it."""

from __future__ import annotations

import shutil

import pytest

from aloe.io import read_json, write_json, write_jsonl
from aloe.report.rundir import load_run
from aloe.safety.prompts import load_prompts, sample_per_source
from aloe.train.align import run_align
from aloe.train.config import AlignSettings, SFTSettings
from aloe.train.metrics import DPOMetrics, DPOStageMetrics, SFTMetrics
from aloe.train.preferences import PACKAGED, hh_pairs
from aloe.train.sft import run_sft

from contract_checks import renamed_key_fails_naming_it


@pytest.fixture(scope="module")
def run_dir(tiny_ckpt, conversations_file, tmp_path_factory):
    """sft/ and align/ of a run directory, written by one SFT step and one DPO stage of one step with
    held-out pairs and the refusal evaluation, so that every optional figure is written."""
    root = tmp_path_factory.mktemp("run")
    run_sft(SFTSettings(model=str(tiny_ckpt), data=str(conversations_file), output_dir=str(root / "sft"),
                        max_steps=1, batch_size=4, max_length=128, save_steps=100, eval_fraction=0.1))
    pairs, harmful = root / "pairs.jsonl", root / "harmful.jsonl"
    write_jsonl(pairs, (p.to_dict() for p in hh_pairs(PACKAGED / "hh_rlhf_harmless.jsonl", 6)))
    write_jsonl(harmful, (p.to_dict() for p in sample_per_source(load_prompts(["advbench"]), 2, seed=0)))
    run_align(AlignSettings(model=str(tiny_ckpt), output_dir=str(root / "align"), batch_size=2, max_length=128,
                            save_steps=100, eval_fraction=0.3, refusal_eval=str(harmful), refusal_eval_n=2,
                            refusal_max_new_tokens=4, stages=[{"data": str(pairs), "max_steps": 1}]))
    return root


def test_the_writers_output_reads_through_its_contract(run_dir):
    sft = SFTMetrics.read(run_dir / "sft" / "metrics.json")
    assert sft.steps == 1 and sft.eval_loss_before is not None and sft.eval_loss_after is not None
    dpo = DPOMetrics.read(run_dir / "align" / "metrics.json")
    (stage,) = dpo.stages
    assert stage == DPOStageMetrics.read(run_dir / "align" / "stage1" / "metrics.json")
    assert stage.heldout_before and stage.heldout_after and stage.heldout_after.reward_margin is not None
    assert dpo.refusal and dpo.refusal.before.prompts == 2
    for m, rel in ((sft, "sft/metrics.json"), (dpo, "align/metrics.json")):
        # every key the writer wrote is in the contract, and an optional figure it left out stays out
        assert m.model_dump(mode="json", exclude_unset=True) == read_json(run_dir / rel)


@pytest.mark.parametrize(("contract", "rel", "where", "old", "new"), [
    (SFTMetrics, "sft/metrics.json", (), "train_examples", "examples"),
    (SFTMetrics, "sft/metrics.json", ("precision",), "compute", "dtype"),
    (DPOMetrics, "align/metrics.json", ("stages", 0), "train_pairs", "pairs"),
    (DPOMetrics, "align/metrics.json", ("refusal", "after"), "refusal_rate", "rate"),
])
def test_a_renamed_key_fails_naming_it(run_dir, tmp_path, contract, rel, where, old, new):
    renamed_key_fails_naming_it(contract, run_dir / rel, tmp_path / "drifted.json", where, old, new)


def test_the_report_reads_them_and_notes_a_drifted_file(run_dir, tmp_path):
    run = load_run(run_dir)
    assert run.sft == SFTMetrics.read(run_dir / "sft" / "metrics.json")
    assert run.align == DPOMetrics.read(run_dir / "align" / "metrics.json") and not run.problems
    drifted = tmp_path / "drifted"
    for rel in ("sft/metrics.json", "align/metrics.json", "align/stage1/metrics.json"):
        (drifted / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(run_dir / rel, drifted / rel)
    raw = read_json(drifted / "sft/metrics.json")
    raw["loss"] = raw.pop("train_loss")
    write_json(drifted / "sft/metrics.json", raw)
    (drifted / "align/metrics.json").unlink()  # a later stage failed: the finished stages are still read
    run = load_run(drifted)
    assert run.sft is None and any(p.startswith("sft/metrics.json: unreadable") and "train_loss" in p
                                   for p in run.problems)
    assert run.align == DPOMetrics(stages=[DPOStageMetrics.read(run_dir / "align" / "stage1" / "metrics.json")])
