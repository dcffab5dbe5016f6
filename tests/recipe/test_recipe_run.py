"""`aloe run` on a tiny model: every stage, the manifest, skipping, kill -9 and resume, validation."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from scripted_openai import ScriptedOpenAIServer

from aloe.cli import main

TINY = Path(__file__).with_name("tiny.yaml")
REPO = Path(__file__).resolve().parents[2]
ALL_STAGES = ["curate", "sft", "merge", "preferences", "redteam_pairs", "align", "eval_base", "openended_base",
              "safety_base", "eval_aligned", "openended_aligned", "bias_aligned", "safety_aligned", "report"]


class Teacher:
    """A scripted teacher: gold-conditioned chains of thought and refusals. Once `kill_after` answers
    have been given to `kill_model`, it kills the runner and answers nothing more, so every request
    it answered was paid for exactly once and must never be asked again."""

    def __init__(self, kill_model: str | None = None, kill_after: int = 0):
        self.answered: list[str] = []
        self.pid: int | None = None
        self.killed = False
        self.kill_model, self.kill_after = kill_model, kill_after
        self.lock = threading.Lock()
        self.server = ScriptedOpenAIServer(self.reply)

    def reply(self, body: dict[str, Any]) -> str:
        with self.lock:
            if self.killed:
                raise ConnectionAbortedError("runner already killed")
            n = sum(1 for a in self.answered if a.startswith(body["model"] + "|"))
            if body["model"] == self.kill_model and n >= self.kill_after and self.pid:
                time.sleep(1.0)  # answers already sent reach the runner's cache first
                os.kill(self.pid, signal.SIGKILL)
                self.killed = True
                raise ConnectionAbortedError("killed the runner")
            self.answered.append(body["model"] + "|" + json.dumps(body["messages"], sort_keys=True)
                                 + f"|{body.get('temperature')}|{body.get('seed')}")
        text = " ".join(m["content"] for m in body["messages"])
        if "<VERDICT>" in text:  # the open-ended judge's rubric
            return "Same conclusion as the reference. <VERDICT>1</VERDICT>"
        gold = re.findall(r"Answer: ([A-J])", text)
        if gold:
            return f"Rephrased question.\nEach option was weighed against the findings.\nSummary: it fits best.\nAnswer: {gold[-1]}"
        return "I cannot help with that: it could cause serious harm. Please speak to a qualified professional."


def _run(args: list[str], teacher: Teacher, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "aloe.cli", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    teacher.pid = proc.pid
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _statuses(run_dir: Path) -> dict[str, str]:
    return {r["name"]: r["status"] for r in json.loads((run_dir / "manifest.json").read_text())["stages"]}


def test_tiny_recipe_killed_mid_stage_resumes_without_paying_twice(tmp_path, talking_checkpoint):
    teacher = Teacher(kill_model="pref-teacher", kill_after=2)
    run_dir = tmp_path / "run"
    args = [str(TINY), "--run-dir", str(run_dir), "--set", f"model={talking_checkpoint}",
            "--set", f"curate.cot.teacher={teacher.server.spec('cot-teacher')}",
            "--set", f"preferences.teacher={teacher.server.spec('pref-teacher')}",
            "--set", f"eval.openended.judge={teacher.server.spec('judge')}"]
    try:
        first = _run(args, teacher)
        assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
        st = _statuses(run_dir)
        assert [st[s] for s in ("curate", "sft", "merge")] == ["done"] * 3
        assert st["preferences"] == "running"  # killed inside the stage
        assert not (run_dir / "preferences" / "_stage.json").exists()
        paid_before = Counter(a.split("|")[0] for a in teacher.answered)
        assert paid_before["cot-teacher"] >= 1 and paid_before["pref-teacher"] == 2

        teacher.killed, teacher.kill_model = False, None
        second = _run(args, teacher)
        assert second.returncode == 0, second.stderr[-3000:]
    finally:
        teacher.server.close()
    for stage in ("curate", "sft", "merge"):
        assert f"{stage}: unchanged, skipped" in second.stderr
    assert set(_statuses(run_dir).values()) == {"done", "skipped"}
    repeated = [k for k, n in Counter(teacher.answered).items() if n > 1]
    assert not repeated, f"teacher asked twice: {repeated[:2]}"

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [r["name"] for r in manifest["stages"]] == ALL_STAGES
    assert manifest["versions"]["torch"] and manifest["git_revision"] and manifest["peak_rss_mib"] > 100
    for r in manifest["stages"]:
        assert r["seconds"] >= 0 and len(r["hash"]) == 64
    assert (run_dir / "align" / "stage2" / "final" / "README.md").is_file()  # the model card
    # resume state went once each training stage was done; the models stayed
    rows = {r["name"]: r for r in manifest["stages"]}
    assert rows["sft"]["scratch_deleted"]["paths"] == ["checkpoints"] and rows["sft"]["scratch_deleted"]["bytes"] > 0
    assert rows["align"]["scratch_deleted"]["paths"] == ["stage1/checkpoints", "stage2/checkpoints"]
    assert not list(run_dir.rglob("checkpoint-*"))
    assert (run_dir / "sft" / "final" / "model.safetensors").is_file()
    html = (run_dir / "report" / "index.html").read_text()
    ev = json.loads((run_dir / "eval" / "aligned" / "zero-shot" / "metrics.json").read_text())
    assert f"{100 * ev['benchmarks']['medqa']['accuracy']:.1f}" in html
    align = json.loads((run_dir / "align" / "metrics.json").read_text())
    assert [s["train_pairs"] > 0 for s in align["stages"]] == [True, True]
    for label in ("base", "aligned"):
        oe = json.loads((run_dir / "eval" / label / "openended" / "metrics.json").read_text())
        assert oe["overall"]["n"] == 3 and oe["overall"]["judge_accuracy"]["mean"] == 1.0  # the scripted judge
        assert f"judged by `{teacher.server.spec('judge')}`: judge agreement NOT measured" in html
    bias = json.loads((run_dir / "eval" / "aligned" / "bias" / "metrics.json").read_text())
    assert set(bias["attributes"]) == {"sex", "age"} and 'data-key="bias|aligned|sex|flip_rate"' in html

    # Nothing changed (keeping checkpoints is in no stage's hash): every stage is skipped and no
    # model is loaded or asked anything.
    n_paid = len(teacher.answered)
    third = subprocess.run([sys.executable, "-m", "aloe.cli", "run", *args, "--set", "keep_checkpoints=true"],
                           capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    assert set(_statuses(run_dir).values()) == {"skipped"}
    assert len(teacher.answered) == n_paid


def test_changed_setting_reruns_only_downstream(tmp_path, talking_checkpoint):
    """Evaluation alone on the base model: a changed eval setting reruns eval and the report only."""
    run_dir = tmp_path / "run"
    base = ["run", str(TINY), "--run-dir", str(run_dir), "--set", f"model={talking_checkpoint}",
            "--only", "eval_base", "--set", "report=false"]
    assert main(base) == 0
    first = json.loads((run_dir / "eval" / "base" / "_stage.json").read_text())
    assert main(base) == 0
    assert _statuses(run_dir)["eval_base"] == "skipped"
    assert main([*base, "--set", "eval.limit=4"]) == 0
    again = json.loads((run_dir / "eval" / "base" / "_stage.json").read_text())
    assert again["hash"] != first["hash"] and again["summary"]["questions"] == 8
    with pytest.raises(ValueError, match="needs sft first"):
        from aloe.cli import build_parser
        from aloe.recipe.cli import run as run_cmd

        run_cmd(build_parser().parse_args(["run", str(TINY), "--run-dir", str(tmp_path / "x"), "--only", "merge"]))


def test_openended_and_bias_stages_reuse_the_eval_folder(tmp_path, talking_checkpoint):
    """The new stages alone on the base model: outputs in eval/base/{openended,bias}, listed in the
    manifest; a changed bias setting reruns bias only; a changed eval setting reruns eval only."""
    run_dir = tmp_path / "run"
    base = ["run", str(TINY), "--run-dir", str(run_dir), "--set", f"model={talking_checkpoint}",
            "--set", "eval.openended.models=[base]", "--set", "eval.bias.models=[base]", "--set", "report=false",
            "--only", "eval_base", "openended_base", "bias_base"]
    assert main(base) == 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rows = {r["name"]: r for r in manifest["stages"]}
    for stage in ("openended_base", "bias_base"):
        assert rows[stage]["status"] == "done" and rows[stage]["outputs"] == [f"eval/base/{stage.split('_')[0]}/metrics.json"]
    assert rows["openended_base"]["summary"]["questions"] == 3 and rows["openended_base"]["summary"]["judge"] == "none"
    oe = run_dir / "eval" / "base" / "openended"
    assert (oe / "_stage.json").is_file() and (oe / "openmedqa" / "predictions.jsonl").is_file()
    assert "judge_accuracy" not in json.loads((oe / "metrics.json").read_text())["overall"]  # no judge, no verdict
    from aloe.evaluate.bias.metrics import BiasMetrics

    bias = BiasMetrics.read(run_dir / "eval" / "base" / "bias" / "metrics.json")
    assert set(bias.attributes) == {"sex", "age"} and bias.questions == 8 and bias.target == "text"
    assert main([*base, "--set", "eval.bias.limit=6"]) == 0
    st = _statuses(run_dir)
    assert (st["eval_base"], st["openended_base"], st["bias_base"]) == ("skipped", "skipped", "done")
    assert main([*base, "--set", "eval.bias.limit=6", "--set", "eval.limit=4"]) == 0
    st = _statuses(run_dir)
    assert (st["eval_base"], st["openended_base"], st["bias_base"]) == ("done", "skipped", "skipped")
    assert BiasMetrics.read(run_dir / "eval" / "base" / "bias" / "metrics.json").questions == 6


@pytest.mark.parametrize(("override", "message"), [
    ("sft.method=qlaro", "sft.method: Input should be 'full', 'lora' or 'qlora'"),
    ("sft.lr=0.1", "sft.lr: unknown key"),
    ("sft.lora.alpah=8", "sft.lora.alpah: unknown key"),
    ("eval.models=[base,final]", "eval.models.1: Input should be 'base', 'sft', 'merged' or 'aligned'"),
    ("redteam.pairs.n_prompts=0", "redteam.pairs.n_prompts: Input should be greater than or equal to 1"),
    ("redteam.judg=refusal", "redteam.judg: unknown key"),
    ("align.stages=[{beta: 0.1}]", "align.stages: List should have at least 2 items"),
    ("align.stages=[{bta: 0.1},{}]", "align.stages.0.bta: unknown key"),
    ("align.lora.rr=4", "align.lora.rr: unknown key"),
    ("preferences.n_medicl=3", "preferences.n_medicl: unknown key"),
    ("merge.parameters.lamda=0.5", "merge: Value error, parameters: unknown key(s) lamda for method dare_ties; allowed: normalize, lam"),
    ("merge={method: slerp, models: [{weight: 1}], parameters: {lam: 0.5}}", "merge: Value error, parameters: unknown key(s) lam for method slerp; allowed: t"),
    ("merge.wieght=1", "merge.wieght: unknown key"),
    ("merge.models=[{weight: 1, densty: 0.5}]", "merge.models.0.densty: unknown key"),
    ("curate.cot.tries=0", "curate.cot.tries: Input should be greater than or equal to 1"),
    ("curate.dedupp=true", "curate.dedupp: unknown key"),
    ("eval.openended.judg=x", "eval.openended.judg: unknown key"),
    ("eval.bias.limt=3", "eval.bias.limt: unknown key"),
    ("eval.strategies.config.k_shot=3", "eval.strategies.config.k_shot: unknown key"),
    ("evall.limit=3", "evall: unknown key"),
    ("eval.bias.attributes=[race]", "eval.bias.attributes.0: Input should be 'sex', 'age', 'ethnicity' or 'socioeconomic'"),
    ("eval.openended.models=[sft]", "openended.models ['sft'] are not in eval.models"),
])
def test_recipe_errors_name_the_key(override, message, capsys):
    assert main(["run", str(TINY), "--dry-run", "--set", override]) == 2
    err = capsys.readouterr().err
    assert str(TINY) in err and message in err, err


def test_unknown_stage_and_missing_recipe(capsys):
    assert main(["run", str(TINY), "--dry-run", "--only", "train"]) == 2
    assert "unknown stage 'train'; stages of this recipe: curate, sft" in capsys.readouterr().err
    assert main(["run", "no-such-recipe"]) == 2
    err = capsys.readouterr().err
    assert "recipe not found: no-such-recipe (packaged recipes: " in err and "demo" in err


@pytest.mark.parametrize("recipe", ["demo", "full-cpu", "aloe-beta-8b", "aloe-qwen2.5-7b"])
def test_packaged_recipes_dry_run(recipe, request, capsys):
    """Validated, paths and models resolved, the plan printed, nothing run."""
    # Only the demo runs on the packaged slices; the others name the full public data.
    data = [] if recipe == "demo" else ["--data-dir", str(request.getfixturevalue("shared_data"))]
    code = main(["run", recipe, "--dry-run", "--run-dir", "/nonexistent/never-created", *data])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "recipe is valid" in out and "estimated total" in out
    for stage in ("curate", "sft", "merge", "preferences", "redteam_pairs", "align", "eval_aligned",
                  "openended_aligned", "bias_aligned", "report"):
        assert re.search(rf"^  {stage}\s", out, re.MULTILINE), stage
    assert re.search(r"^  openended_aligned .*\n\s+sets openmedqa.*judge agreement NOT measured", out, re.MULTILINE)
    assert not Path("/nonexistent/never-created").exists()
