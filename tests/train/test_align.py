"""Two DPO stages on the tiny model, HH-RLHF pairs parsed from the packaged slice."""

from __future__ import annotations

import json

from aloe.io import write_jsonl
from aloe.train.align import preference_metrics, run_align
from aloe.train.config import AlignSettings
from aloe.train.data import load_preferences
from aloe.train.preferences import PACKAGED, hh_pairs, parse_hh


def test_parse_hh_transcript():
    msgs = parse_hh("\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: like this")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[-1]["content"] == "like this"


def test_preference_metrics_reward_margin_against_reference():
    ref = [(-10.0, -9.0), (-5.0, -6.0)]
    after = [(-8.0, -9.0), (-5.0, -7.0)]
    m = preference_metrics(after, ref, beta=0.5)
    assert m["preference_accuracy"] == 1.0 and m["logp_margin"] == 1.5
    # beta * (margin_after - margin_ref): 0.5 * (1 - (-1)) = 1.0 and 0.5 * (2 - 1) = 0.5
    assert m["reward_margin"] == 0.75 and m["reward_accuracy"] == 1.0


def test_two_stages_chain_hold_out_and_exclude_sources(tiny_ckpt, tmp_path):
    pairs = hh_pairs(PACKAGED / "hh_rlhf_harmless.jsonl", 12)
    assert len(pairs) == 12 and all(p.prompt[-1]["role"] == "user" for p in pairs)
    for p in pairs[:4]:
        p.source = "redteam/advbench"
    stage1, stage2 = tmp_path / "s1.jsonl", tmp_path / "s2.jsonl"
    write_jsonl(stage1, (p.to_dict() for p in pairs[4:]))
    write_jsonl(stage2, (p.to_dict() for p in pairs))
    s = AlignSettings(model=str(tiny_ckpt), output_dir=str(tmp_path / "out"), batch_size=2, max_length=256,
                      save_steps=100, eval_fraction=0.25,
                      stages=[{"data": str(stage1), "max_steps": 2, "learning_rate": 1e-3},
                              {"data": str(stage2), "max_steps": 2, "learning_rate": 1e-3,
                               "exclude_sources": ["redteam/"], "loss_type": "ipo", "beta": 0.2}])
    m = run_align(s)
    s1, s2 = m["stages"]
    assert s1["steps"] == 2 and s2["steps"] == 2
    assert s2["start_model"] == str(tmp_path / "out" / "stage1" / "final")
    assert s2["train_pairs"] + s2["heldout_pairs"] == 8  # the 4 redteam/ pairs were excluded
    held = load_preferences(tmp_path / "out" / "stage2" / "heldout.jsonl")
    assert held and not any(p.source.startswith("redteam/") for p in held)
    for st in (s1, s2):
        assert set(st["heldout_after"]) >= {"preference_accuracy", "logp_margin", "reward_margin"}
    assert json.loads((tmp_path / "out" / "stage2" / "final" / "aloe-train-complete.json").read_text())["stage"] == 2


def test_lora_dpo_with_precomputed_reference(tiny_ckpt, tmp_path):
    from transformers import AutoModelForCausalLM

    data = tmp_path / "p.jsonl"
    write_jsonl(data, (p.to_dict() for p in hh_pairs(PACKAGED / "hh_rlhf_harmless.jsonl", 6)))
    s = AlignSettings(model=str(tiny_ckpt), output_dir=str(tmp_path / "out"), batch_size=2, max_length=256,
                      method="lora", lora={"r": 4, "alpha": 8}, precompute_ref_log_probs=True, eval_fraction=0.3,
                      stages=[{"data": str(data), "max_steps": 2, "learning_rate": 1e-3}])
    m = run_align(s)["stages"][0]
    assert m["steps"] == 2 and m["heldout_after"]["pairs"] == 2
    final = tmp_path / "out" / "stage1" / "final"
    assert not any("lora" in n for n, _ in AutoModelForCausalLM.from_pretrained(final).named_parameters())
