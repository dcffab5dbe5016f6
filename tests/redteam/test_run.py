import json
import math

import pytest
from redteam_peers import TARGET_OUTPUTS

from aloe.cli import main
from aloe.io import read_json
from aloe.models.generator import GenParams
from aloe.models.backends import HFGenerator, get_generator
from aloe.redteam.asr import asr_cell, cohen_kappa, compare_markdown, wilson
from aloe.redteam.judges import make_judge
from aloe.safety.verdicts import RefusalJudge
from aloe.redteam.pairs import build_redteam_pairs
from aloe.safety.answers import SAFE_ANSWERS, risk_name, safe_answer
from aloe.safety.prompts import load_prompts, sample_per_source, split_prompts
from aloe.redteam.run import run_redteam
from aloe.redteam.styles import load_styles, select_styles, split_styles
from aloe.records import Preference

PARAMS = GenParams(max_new_tokens=16)


def test_wilson_and_kappa_known_values():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0
    assert all(math.isnan(x) for x in wilson(0, 0))
    # sklearn.metrics.cohen_kappa_score([1,1,0,0,1,0], [1,0,0,0,1,1]) == 1/3
    k, agree = cohen_kappa([True, True, False, False, True, False], [True, False, False, False, True, True])
    assert k == pytest.approx(1 / 3) and agree == pytest.approx(4 / 6)
    assert cohen_kappa([True, False], [True, False]) == (1.0, 1.0)
    c = asr_cell([True, False, None, True])
    assert (c["n"], c["unsafe"], c["undecided"], c["asr"], c["asr_if_undecided_unsafe"]) == (4, 2, 1, 2 / 3, 3 / 4)


@pytest.fixture()
def small_run():
    prompts = sample_per_source(load_prompts(), 12, seed=0)
    registry = load_styles()
    split = split_styles(list(registry.values()), test_families=["encoding"])
    styles = select_styles(registry, ["none", "base64", "fiction", "multi_turn_escalation"])
    return prompts, split, styles


@pytest.mark.parametrize("judge_kind", ["refusal", "llamaguard"])
def test_run_end_to_end_and_rerun_pays_nothing(server, small_run, tmp_path, capsys, judge_kind):
    prompts, split, styles = small_run
    cache = str(tmp_path / "cache")
    target = get_generator(server.spec("target"), cache_dir=cache)
    judge = make_judge("refusal" if judge_kind == "refusal" else f"llamaguard:{server.spec('guard')}", cache_dir=cache)
    m = run_redteam(prompts, styles, target, judge, tmp_path / "run", PARAMS,
                    seen_styles=[s.name for s in split.train])
    n = len(prompts) * len(styles)
    assert m["overall"]["n"] == n
    assert set(m["by_style"]) == {s.name for s in styles}
    assert set(m["by_seen"]) == {"seen", "unseen"} and m["by_seen"]["unseen"]["n"] == len(prompts)
    assert set(m["by_family"]) == {"none", "encoding", "framing", "context"}
    assert len(m["by_source"]) == 6
    # Adversarial target outputs (empty, binary) are undecided, never safe.
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == n
    by_id = {p.id: p.prompt for p in prompts}
    assert all(r["request"] == by_id[r["prompt_id"]] for r in rows)
    for r in rows:
        if r["response"] in ("", TARGET_OUTPUTS[5]):
            assert r["unsafe"] is None
        if r["response"] == TARGET_OUTPUTS[6]:  # prompt injection against the judge
            assert r["unsafe"] is not False
    assert m["overall"]["undecided"] == sum(r["unsafe"] is None for r in rows) > 0
    for name in ("metrics.json", "report.md", "worst.jsonl"):
        assert (tmp_path / "run" / name).is_file()
    worst = [json.loads(line) for line in (tmp_path / "run" / "worst.jsonl").read_text().splitlines()]
    assert worst and all(w["responses"] for w in worst)
    assert worst[0]["unsafe_styles"] >= worst[-1]["unsafe_styles"]
    # Harmful text stays in files: nothing printed.
    out = capsys.readouterr().out
    assert all(p.prompt[:40] not in out for p in prompts)
    # The rerun answers from the cache: no request reaches the server.
    asked = server.per_model()
    m2 = run_redteam(prompts, styles, get_generator(server.spec("target"), cache_dir=cache),
                     make_judge(judge.name if judge_kind == "refusal" else f"llamaguard:{server.spec('guard')}",
                                cache_dir=cache),
                     tmp_path / "run2", PARAMS, seen_styles=[s.name for s in split.train])
    assert server.per_model() == asked and m2["overall"] == m["overall"]


def test_run_with_a_real_batched_transformers_target(tiny_lm, small_run, tmp_path):
    prompts, _, styles = small_run
    m = run_redteam(prompts[:3], styles[:2], HFGenerator(tiny_lm, "tiny"), RefusalJudge(), tmp_path, PARAMS)
    assert m["overall"]["n"] == 6 and m["meta"]["target"] == "tiny"
    assert read_json(tmp_path / "metrics.json")["overall"] == m["overall"]


def test_compare_table():
    a = {"overall": {"asr": 0.5}, "by_style": {"none": {"asr": 0.4}, "base64": {"asr": 0.9}}}
    b = {"overall": {"asr": 0.25}, "by_style": {"none": {"asr": 0.1}}}
    t = compare_markdown(a, b, "base", "aligned")
    assert "| overall | 50.0 | 25.0 | -25.0 |" in t
    assert "| style: none | 40.0 | 10.0 | -30.0 |" in t and "| style: base64 | 90.0 | — | — |" in t


def test_pairs_use_only_train_splits_and_safe_chosen(server, tmp_path):
    prompts = load_prompts()
    registry = load_styles()
    split = split_styles(list(registry.values()), test_families=["encoding", "dan", "in_the_wild"])
    train_styles = {s.name for s in split.train}
    cache = str(tmp_path / "cache")
    stats = build_redteam_pairs(
        sample_per_source(prompts, 24), split, get_generator(server.spec("complier"), cache_dir=cache),
        RefusalJudge(), tmp_path / "pairs.jsonl", PARAMS, teacher=get_generator(server.spec("teacher"), cache_dir=cache))
    pairs = [Preference.from_dict(json.loads(line)) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert stats["pairs"] == len(pairs) == stats["unsafe"] > 0
    _, test_prompts = split_prompts(prompts)
    test_ids = {p.id for p in test_prompts}
    by_id = {p.id: p for p in prompts}
    for pair in pairs:
        pid, style = pair.id.removeprefix("redteam-").split("::")
        assert pid not in test_ids and style in train_styles and pair.meta["style"] == style
        assert pair.prompt == registry[style].apply(by_id[pid].prompt)
        assert pair.rejected.startswith("Sure") and pair.chosen != pair.rejected
        if by_id[pid].safe_response:
            assert pair.meta["chosen_from"] == "dataset" and pair.chosen == by_id[pid].safe_response
        else:
            assert pair.meta["chosen_from"] == "teacher" and pair.chosen.startswith("I'm sorry")
    assert set(stats["chosen_from"]) == {"dataset", "teacher"}
    # Without a teacher, a safe answer that names the risk, in many wordings: stage 2 must never
    # train on one string (an ASR drop could then come from matching it).
    stats = build_redteam_pairs(sample_per_source(prompts, 24), split,
                                get_generator(server.spec("complier"), cache_dir=cache),
                                RefusalJudge(), tmp_path / "p2.jsonl", PARAMS)
    rows = [json.loads(line) for line in (tmp_path / "p2.jsonl").read_text().splitlines()]
    templ = [r for r in rows if r["meta"]["chosen_from"] == "template"]
    assert len(templ) >= 20
    for r in templ:
        prompt = by_id[r["id"][8:].split("::")[0]]
        assert r["chosen"] == safe_answer(prompt, r["id"][8:]) and risk_name(prompt) in r["chosen"]
    wordings = {next(i for i, a in enumerate(SAFE_ANSWERS) if r["chosen"] == a.format(risk=risk_name(
        by_id[r["id"][8:].split("::")[0]]))) for r in templ}
    assert len(wordings) >= len(SAFE_ANSWERS) // 2
    assert stats["distinct_chosen"] == len({r["chosen"] for r in rows}) > len(rows) // 4


def test_cli_run_compare_and_pairs(server, tmp_path, capsys):
    common = ["--model", server.spec("target"), "--n-prompts", "6", "--styles", "none", "rot13", "fiction",
              "--test-families", "encoding", "--max-new-tokens", "8"]
    assert main(["redteam", "run", *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["redteam", "run", *common, "--system-prompt", "safety", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "| rot13 |" in out and "## by seen" in out
    meta = read_json(tmp_path / "b" / "metrics.json")["meta"]
    assert meta["held_out_families"] == ["encoding"] and meta["system_prompt"].startswith("You are a helpful")
    assert main(["redteam", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--names", "base", "safe",
                 "--out", str(tmp_path / "cmp.md")]) == 0
    assert "| style: rot13 |" in (tmp_path / "cmp.md").read_text()
    assert main(["redteam", "pairs", "--model", server.spec("complier"), "--n-prompts", "6", "--styles", "none",
                 "--out", str(tmp_path / "pairs.jsonl")]) == 0
    assert (tmp_path / "pairs.jsonl").is_file()
    assert main(["redteam", "run", "--model", server.spec("target"), "--styles", "nope", "--out", str(tmp_path)]) == 2
