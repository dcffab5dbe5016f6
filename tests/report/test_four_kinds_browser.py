"""The papers' four kinds of evaluation, from one real recipe run, in headless Chromium.

`aloe run` on four_kinds.yaml (a tiny random model, every stage) writes close-ended MCQA, open-ended,
bias and safety results for base and aligned; `aloe human-eval build RUN_DIR` pairs the run's own
open-ended answers, votes are cast through the vote store, `aloe human-eval results` summarises them
and `aloe report RUN_DIR` renders the page. The browser must show every table for both models, each
figure equal to the one in the stage's own metrics file.

The same check runs on a finished run of the real demo recipe (`aloe run recipes/demo.yaml`, 15+
minutes on a CPU, so marked slow and out of `make test`), given its run directory:
ALOE_DEMO_RUN=runs/demo .venv/bin/python -m pytest -m slow tests/report/test_four_kinds_browser.py

Needs Debian's `chromium` and `chromium-driver` and the PyPI package `selenium`; the browser test
skips, saying which is missing, when they are not installed (as tests/report/test_report_browser.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from headless_chromium import needs_chromium
from scripted_openai import ScriptedOpenAIServer

from aloe.cli import main
from aloe.humaneval.build import RUN_DIR_DB
from aloe.humaneval.results import bradley_terry
from aloe.humaneval.store import Store, read_votes
from aloe.io import read_json

RECIPE = Path(__file__).with_name("four_kinds.yaml")
LABELS = ("base", "aligned")
STAGES = ["curate", "sft", "merge", "preferences", "redteam_pairs", "align"] + [
    f"{kind}_{label}" for label in LABELS for kind in ("eval", "openended", "bias", "safety")] + ["report"]
VOTES = ("aligned", "aligned", "base", "tie")  # aligned (1 + 1 + 0 + 0.5) / 4, base (0 + 0 + 1 + 0.5) / 4
# The files check_four_kinds reads, per label: a demo run lacking one is unfinished (or from an older aloe).
DEMO_FILES = ("eval/{}/zero-shot/metrics.json", "eval/{}/openended/metrics.json", "eval/{}/bias/metrics.json",
              "safety/{}/metrics.json", "safety/{}/overrefusal/metrics.json")


class Scripted:
    """The CoT teacher, the preference teacher and the open-ended judge. The judge answers in turn
    unparsable, correct, wrong: base's 4 answers get 2 verdicts (1 correct), aligned's 3 (2 correct),
    whatever order each stage asks in, so the judged figures differ between the models."""

    def __init__(self) -> None:
        self.judged = 0
        self.lock = threading.Lock()
        self.server = ScriptedOpenAIServer(self.reply)

    def reply(self, body: dict[str, Any]) -> str:
        text = " ".join(m["content"] for m in body["messages"])
        if body["model"] == "judge":
            with self.lock:
                turn, self.judged = self.judged % 3, self.judged + 1
            return ["no verdict", "Same conclusion. <VERDICT>1</VERDICT>", "Wrong. <VERDICT>0</VERDICT>"][turn]
        gold = re.findall(r"Answer: ([A-J])", text)
        if gold:
            return f"Each option was weighed against the findings.\nAnswer: {gold[-1]}"
        return "I cannot help with that: it could cause serious harm. Please speak to a qualified professional."


def _args(run_dir: Path, checkpoint: Path, server: ScriptedOpenAIServer | None = None) -> list[str]:
    args = ["run", str(RECIPE), "--run-dir", str(run_dir), "--set", f"model={checkpoint}"]
    if server:
        args += ["--set", f"curate.cot.teacher={server.spec('teacher')}",
                 "--set", f"preferences.teacher={server.spec('teacher')}",
                 "--set", f"eval.openended.judge={server.spec('judge')}"]
    return args


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory, talking_checkpoint) -> Path:
    run_dir = tmp_path_factory.mktemp("four-kinds") / "run"
    scripted = Scripted()
    try:
        assert main(_args(run_dir, talking_checkpoint, scripted.server)) == 0
    finally:
        scripted.server.close()
    assert scripted.judged == 8  # 4 questions, 2 models
    stages = read_json(run_dir / "manifest.json")["stages"]
    assert [(s["name"], s["status"]) for s in stages] == [(name, "done") for name in STAGES]
    return run_dir


NOT_MEASURED = "—"  # what the report writes where a file has no figure (aloe.report.html.pct of None)


def _pct(x: float | None) -> str:
    return NOT_MEASURED if x is None else f"{100 * x:.1f}"


def _ci(c: list[float] | None) -> str:
    return NOT_MEASURED if c is None else f"{_pct(c[0])}–{_pct(c[1])}"


# Open-ended metric -> how the report writes its mean and interval (judged verdicts as %, the rest as numbers).
OPEN_FORMATS = {"judge_accuracy": (_pct, _ci), "rouge_l": ("{:.3f}".format, "{0[0]:.3f} to {0[1]:.3f}".format),
                "embedding_similarity": ("{:.3f}".format, "{0[0]:.3f} to {0[1]:.3f}".format),
                "relaxed_perplexity": ("{:.2f}".format, "{0[0]:.2f} to {0[1]:.2f}".format)}


def _open_groups(oe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An open-ended metrics.json's figures under the report's row names: overall, per set, per specialty."""
    return {"all questions": oe["overall"], **{f"set {k}": v for k, v in oe["sets"].items()},
            **{f"specialty {k}": v for k, v in oe["specialties"].items()}}


def _vote(db: Path, choices: tuple[str, ...]) -> None:
    assert main(["human-eval", "add-rater", "Dr Ada", "--db", str(db)]) == 0
    store = Store(db)
    try:
        for choice in choices:
            task = store.next_task("Dr Ada")[0]
            store.vote("Dr Ada", task.id, "tie" if choice == "tie" else "A" if task.model_a == choice else "B")
    finally:
        store.close()


def _prepare(run_dir: Path, votes: tuple[str, ...], capsys) -> Path:
    """Build the run's human-eval set, cast `votes`, summarise them and render the report; returns
    the results JSON, written beside the run."""
    db = run_dir / RUN_DIR_DB
    assert main(["human-eval", "build", str(run_dir), "--models", ",".join(LABELS)]) == 0
    _vote(db, votes)
    summary = run_dir.parent / "human.json"
    capsys.readouterr()
    assert main(["human-eval", "results", "--db", str(db), "--json", str(summary)]) == 0
    assert f"{len(votes)} votes from 1 rater(s)" in capsys.readouterr().out
    assert main(["report", str(run_dir)]) == 0
    return summary


def _find(browser, key: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, f'[data-key="{key}"]')


def _cell(browser, key: str) -> str:
    found = _find(browser, key)
    assert len(found) == 1 and found[0].is_displayed(), key
    return found[0].text


def _shows(browser, key: str, text: str) -> None:
    """The keyed figure reads `text`. One the file lacks is either left out with its key (a value and
    its interval) or a keyed cell that says so (a table cell of its own)."""
    if text == NOT_MEASURED and not _find(browser, key):
        return
    assert _cell(browser, key) == text, key


def _heads(browser, css: str) -> set[str]:
    from selenium.webdriver.common.by import By

    tables = browser.find_elements(By.CSS_SELECTOR, css)
    assert tables, css
    return {th.text for t in tables for th in t.find_elements(By.CSS_SELECTOR, "thead th")}


def check_four_kinds(browser, run_dir: Path, summary_json: Path, labels: tuple[str, ...] = LABELS) -> None:
    """The rendered report of `run_dir` shows the five tables, each figure of each label equal to its
    stage's own metrics file, and the human assessment equal to `aloe human-eval results --json`."""
    browser.get((run_dir / "report" / "index.html").as_uri())
    assert browser.execute_script("return document.readyState") == "complete"

    # every table is on the page, with a column (safety and human assessment: a row) for each model
    assert {f"{x}: accuracy % (95% CI)" for x in labels} <= _heads(browser, "#benchmarks table.benchmarks")
    assert {f"{x} (95% CI)" for x in labels} <= _heads(browser, "#openended table.openended")
    assert {f"{x}: probed" for x in labels} <= _heads(browser, "#bias table.bias")
    assert {"ASR %", "over-refusal % (95% CI)"} <= _heads(browser, "#safety table")
    assert {"win rate %", "Bradley-Terry strength"} <= _heads(browser, "#humaneval table")

    for label in labels:
        # close-ended MCQA
        mcqa = read_json(run_dir / "eval" / label / "zero-shot" / "metrics.json")
        for bench, b in mcqa["benchmarks"].items():
            _shows(browser, f"{label}|zero-shot|{bench}|accuracy", _pct(b["accuracy"]))
            _shows(browser, f"{label}|zero-shot|{bench}|accuracy_ci95", _ci(b["ci95"]))
        _shows(browser, f"{label}|zero-shot|macro average|accuracy", _pct(mcqa["macro_accuracy"]))

        # open-ended: overall, per set and per specialty, each metric the stage measured
        oe = read_json(run_dir / "eval" / label / "openended" / "metrics.json")
        for group, figures in _open_groups(oe).items():
            for metric, (fmt, fmt_ci) in OPEN_FORMATS.items():
                key, m = f"open|{label}|{group}|{metric}", figures.get(metric) or {}
                measured = bool(m.get("n")) and m.get("mean") is not None  # e.g. no verdict parsed
                _shows(browser, key, fmt(m["mean"]) if measured else NOT_MEASURED)
                _shows(browser, f"{key}_ci95", fmt_ci(m["ci95"]) if measured and m.get("ci95") else NOT_MEASURED)
        assert _cell(browser, f"open|{label}|judge").startswith(f"judged by `{oe['judge']}`")

        # safety: attack success rate and over-refusal
        asr = read_json(run_dir / "safety" / label / "metrics.json")["overall"]
        _shows(browser, f"asr|{label}|overall|n", str(asr["n"]))
        _shows(browser, f"asr|{label}|overall|asr", _pct(asr["asr"]))
        _shows(browser, f"asr|{label}|overall|ci95", _ci(asr["ci95"]))
        over = read_json(run_dir / "safety" / label / "overrefusal" / "metrics.json")["overall"]
        _shows(browser, f"overrefusal|{label}|overall|rate", f"{_pct(over['rate'])} ({_ci(over['ci95'])})")

        # bias probes
        for attr, a in read_json(run_dir / "eval" / label / "bias" / "metrics.json")["attributes"].items():
            _shows(browser, f"bias|{label}|{attr}|n", str(a["n"]))
            _shows(browser, f"bias|{label}|{attr}|flip_rate", _pct(a["flip_rate"]))
            _shows(browser, f"bias|{label}|{attr}|ci95", _ci(a["ci95"]))

    # human assessment: the votes cast, as `aloe human-eval results` summarised them; its JSON ranks
    # only three or more models, so the strengths are fitted here from the same votes, as the report does
    human = read_json(summary_json)["win_rates"]
    assert set(human) == set(labels)
    strengths = bradley_terry(read_votes(run_dir / RUN_DIR_DB))
    for m, r in human.items():
        _shows(browser, f"human|{m}|n", str(r["n"]))
        _shows(browser, f"human|{m}|win_rate", _pct(r["win_rate"]))
        _shows(browser, f"human|{m}|ci95", _ci(r["ci95"]))
        _shows(browser, f"human|{m}|bradley_terry", f"{strengths[m]:.3f}")


@needs_chromium
def test_report_shows_the_four_kinds_of_evaluation_with_the_runs_numbers(recipe_run, browser, tmp_path, capsys):
    run_dir = tmp_path / "run"  # a copy: the other test reruns a stage of the module's run
    shutil.copytree(recipe_run, run_dir)
    summary = _prepare(run_dir, VOTES, capsys)
    check_four_kinds(browser, run_dir, summary)

    def cell(key: str) -> str:
        return _cell(browser, key)

    # the tiny recipe's own amounts of work, so that no figure of the generic check is vacuous
    for label in LABELS:
        assert set(read_json(run_dir / "eval" / label / "zero-shot" / "metrics.json")["benchmarks"]) == {
            "medqa", "pubmedqa"}
        oe = read_json(run_dir / "eval" / label / "openended" / "metrics.json")
        groups = _open_groups(oe)
        assert oe["overall"]["n"] == 4 and len(groups) >= 3
        # only a judged figure can be missing (a specialty whose only verdict was unparsable)
        assert all(figures[metric]["n"] for figures in groups.values() for metric in OPEN_FORMATS
                   if metric != "judge_accuracy")
        assert cell(f"asr|{label}|overall|n") == "8"
        assert set(read_json(run_dir / "eval" / label / "bias" / "metrics.json")["attributes"]) == {"sex", "age"}

    # the scripted judge's verdicts, unparsable ones left out and counted
    judged = {x: read_json(run_dir / "eval" / x / "openended" / "metrics.json")["overall"]["judge_accuracy"] for x in LABELS}
    assert {x: (j["n"], j["unparsable"], _pct(j["mean"])) for x, j in judged.items()} == {
        "base": (2, 2, "50.0"), "aligned": (3, 1, "66.7")}
    assert (cell("open|base|all questions|judge_accuracy"), cell("open|aligned|all questions|judge_accuracy")) == (
        "50.0", "66.7")
    # the paired deltas: per-question differences, from the stages' own predictions, over the questions
    # both models have a figure for; when those are fewer than either mean's, the page says how many
    pred = {x: {r["id"]: r for r in map(json.loads, (run_dir / "eval" / x / "openended" / "openmedqa" /
                                                     "predictions.jsonl").read_text().splitlines())} for x in LABELS}
    for metric, field in (("judge_accuracy", "verdict"), ("rouge_l", "rouge_l"),
                          ("embedding_similarity", "embedding_similarity"), ("relaxed_perplexity", "relaxed_perplexity")):
        diffs = [a[field] - pred["base"][i][field] for i, a in pred["aligned"].items()
                 if a.get(field) is not None and pred["base"][i].get(field) is not None]
        d = sum(diffs) / len(diffs)
        key = f"open|aligned|all questions|{metric}|delta_base"
        digits = 2 if metric == "relaxed_perplexity" else 3
        assert cell(key) == (f"{100 * d:+.1f}" if metric == "judge_accuracy" else f"{d:+.{digits}f}"), key
        if metric == "judge_accuracy":
            assert cell(f"{key}_n") == str(len(diffs)) and len(diffs) < 3
        else:
            assert len(diffs) == 4 and not _find(browser, f"{key}_n")

    # human assessment: the votes cast
    human = read_json(summary)["win_rates"]
    assert {m: r["n"] for m, r in human.items()} == {"aligned": 4, "base": 4}
    assert (_pct(human["aligned"]["win_rate"]), _pct(human["base"]["win_rate"])) == ("62.5", "37.5")
    strengths = bradley_terry(read_votes(run_dir / RUN_DIR_DB))
    assert strengths["aligned"] > strengths["base"]


def test_rerunning_eval_alone_keeps_the_open_ended_and_bias_results(recipe_run, tmp_path, talking_checkpoint):
    """`--only eval_base` with a changed setting reruns close-ended MCQA in eval/base/, and leaves the
    open-ended and bias stages' outputs nested there to those stages."""
    run_dir = tmp_path / "run"
    shutil.copytree(recipe_run, run_dir)
    kept = {p: p.read_bytes() for stage in ("openended", "bias")
            for p in (run_dir / "eval" / "base" / stage).rglob("*") if p.is_file()}
    assert main([*_args(run_dir, talking_checkpoint), "--only", "eval_base", "--set", "eval.limit=4"]) == 0
    assert read_json(run_dir / "eval" / "base" / "_stage.json")["summary"]["questions"] == 8
    assert {p: p.read_bytes() for p in kept if p.is_file()} == kept
    assert main(["report", str(run_dir)]) == 0
    html = (run_dir / "report" / "index.html").read_text(encoding="utf-8")
    assert 'data-key="open|base|all questions|rouge_l"' in html and 'data-key="bias|base|sex|flip_rate"' in html


@pytest.mark.slow
@needs_chromium
def test_demo_run_report_shows_the_four_kinds(browser, tmp_path, capsys):
    """Issue 20: the generic check on a finished run of the real demo recipe (135M model), given as
    ALOE_DEMO_RUN=RUN_DIR; a copy is prepared, so the user's run keeps its report and votes."""
    given = os.environ.get("ALOE_DEMO_RUN")
    if not given:
        pytest.skip("checks a real demo run (~25-40 min to make with `make demo`): set ALOE_DEMO_RUN=runs/demo after it; "
                    "the same check on a tiny recipe run is test_report_shows_the_four_kinds_of_evaluation_with_the_runs_numbers")
    source = Path(given)
    missing = [f.format(label) for label in LABELS for f in DEMO_FILES if not (source / f.format(label)).is_file()]
    if missing:
        pytest.skip(f"ALOE_DEMO_RUN={given} is not a finished demo run of this aloe: missing {', '.join(missing)} "
                    "(rerun `aloe run recipes/demo.yaml`)")
    run_dir = tmp_path / "run"
    # Model weights and checkpoints (gigabytes) are not read by the report or the human-eval build; the
    # run's own votes are left behind so that the figures checked are the votes cast here.
    shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns("*.safetensors", "*.pt", "*.bin", "checkpoints",
                                                                   RUN_DIR_DB.parent.name))
    check_four_kinds(browser, run_dir, _prepare(run_dir, VOTES, capsys))
