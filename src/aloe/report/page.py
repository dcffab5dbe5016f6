"""The run's one self-contained HTML page: inline CSS, inline SVG plots, no scripts, no external
assets, so it opens anywhere (an air-gapped hospital intranet included) and can be mailed as is.

Each section renders from its own files; a section whose files are missing says "not run", so the
runner can render the page after any failure. Safety results are linked, never inlined.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aloe.humaneval.build import RUN_DIR_DB, RUN_DIR_INPUT
from aloe.io import write_text
from aloe.report.html import (
    Cell,
    Markup,
    Series,
    ci,
    grouped_bars,
    hbar_chart,
    join,
    link,
    not_run,
    num,
    pct,
    pts,
    pts_ci,
    table,
    tag,
)
from aloe.report.results import (
    MACRO,
    OPEN_ALL,
    OPEN_METRICS,
    ZERO_SHOT,
    EvalRow,
    OpenRow,
    eval_rows,
    judge_note,
    machine_line,
    open_judge_note,
    open_rows,
    refusal_ci,
    setting_name,
    stage_times,
)
from aloe.report.risk_card import build_risks, final_label
from aloe.redteam.metrics import AsrCell
from aloe.report.rundir import Run, load_run
from aloe.run_layout import LABELS

CSS = """
body{font-family:system-ui,-apple-system,sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #4e79a7;padding-bottom:.2em;margin-top:2em}
nav a{margin-right:1em} dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}
dl.facts dt{font-weight:600} table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left} td{font-variant-numeric:tabular-nums}
thead th{background:#f0f3f7} tr:nth-child(even) td{background:#fafbfc}
.not-run{color:#888;font-style:italic} .warn{color:#a33} .note{color:#555;font-size:.9em}
svg{display:block;margin:.6em 0;font-size:11px;font-family:inherit} svg .tick{fill:#777}
svg .bar.done{fill:#59a14f} svg .bar.failed{fill:#e15759}
svg .bar.skipped{fill:#bab0ac} svg .bar.running,svg .bar.pending{fill:#edc948}
svg text.unseen{fill:#b00;font-weight:600} .status-failed{color:#b00;font-weight:600}
"""


def _section(sid: str, title: str, body: Markup) -> Markup:
    return tag("section", tag("h2", title) + body, id=sid)


def _stage_note(run: Run, stage: str) -> Markup:
    status = run.stage_status(stage)
    if status and status not in ("done", "skipped"):
        return tag("p", f"stage {stage}: {status}", cls="warn")
    return Markup("")


def _rendering_now(m: dict[str, Any] | None) -> bool:
    """True when the run's own `report` stage renders this page: every other stage is finished."""
    stages = [s for s in (m or {}).get("stages", []) if isinstance(s, dict)]
    return any(s.get("name") == "report" and s.get("status") == "running" for s in stages) and all(
        s.get("status") in ("done", "skipped") for s in stages if s.get("name") != "report")


def header(run: Run) -> Markup:
    m = run.manifest
    name = (m or {}).get("name") or run.root.name
    if not m:
        return tag("header", tag("h1", f"aloe run: {name}") + not_run("no manifest.json"))
    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())
    host = m.get("host") or {}
    total = run.total_seconds()
    facts = [("recipe", m.get("recipe")), ("git revision", m.get("git_revision")), ("versions", versions),
             ("host", f"{host.get('cpu_count', '?')} CPUs, GPU: {host.get('gpu') or 'none'}"),
             ("started", m.get("started")), ("finished", m.get("finished") or ("all stages done; this page is the last"
                                                                 if _rendering_now(m) else "unfinished")),
             ("total time", f"{total / 60:.1f} min ({total:.0f} s)" if total is not None else "—"),
             ("peak memory", f"{m['peak_rss_mib']} MiB ({m['peak_rss_mib'] / 1024:.2f} GiB)"
              if isinstance(m.get("peak_rss_mib"), (int, float)) else "—")]
    dl = tag("dl", join([tag("dt", k) + tag("dd", v, id=f"fact-{k.replace(' ', '-')}") for k, v in facts]), cls="facts")
    return tag("header", tag("h1", f"aloe run: {name}") + dl)


def pipeline(run: Run) -> Markup:
    stages = [s for s in (run.manifest or {}).get("stages", []) if isinstance(s, dict)]
    if not stages:
        return not_run("no stages in manifest.json")
    rows = []
    for s in stages:
        summary = ", ".join(f"{k} {v}" for k, v in (s.get("summary") or {}).items())
        status = str(s.get("status"))
        if s.get("name") == "report" and _rendering_now(run.manifest):
            status = "this page"
        rows.append([s.get("name"), Cell(status, f"stage|{s.get('name')}|status", f"status-{status}"),
                     Cell(num(s.get("seconds"), 1), f"stage|{s.get('name')}|seconds"), summary])
    bars = [(str(s.get("name")), float(s["seconds"]), str(s.get("status")))
            for s in stages if isinstance(s.get("seconds"), (int, float))]
    return (table(["stage", "status", "seconds", "summary"], rows)
            + hbar_chart(bars, "time per stage (seconds)"))


def timings(run: Run) -> Markup:
    times = stage_times(run)
    if not times:
        return not_run("no stages in manifest.json")
    rendering = _rendering_now(run.manifest)
    rows = [[t.name, Cell(num(t.seconds, 1), f"time|{t.name}|seconds"),
             Cell("this page" if rendering and t.name == "report" else t.how, f"time|{t.name}|how"),
             Cell(t.precision, f"time|{t.name}|precision"), Cell(num(t.loads), f"time|{t.name}|loads"),
             Cell(num(t.load_seconds, 1), f"time|{t.name}|load_seconds")] for t in times]
    machine = machine_line(run)
    loading = sum(t.load_seconds or 0.0 for t in times)
    total = sum(t.seconds or 0.0 for t in times)
    note = (f"Stage seconds as recorded when each stage last ran; {num(loading, 1)} of their {num(total, 1)} s went to "
            "loading models (transformers' loader: weights, judges, embedders). Reused results were computed by "
            "another run with the same base model weights, data, settings and aloe code (the result cache).")
    return (tag("p", machine or "CPU not recorded (a manifest from an older aloe)", id="machine")
            + table(["stage", "seconds", "how", "precision (model, dtype, device)", "model loads", "loading s"], rows)
            + tag("p", note, cls="note"))


def _span(text: str, key: str) -> Markup:
    return tag("span", text, data_key=key)


def _value(x: float | None, c: Any, key: str, delta: bool = False) -> Markup:
    """`value (interval)` with both parts keyed, for readers and for tests."""
    if x is None:
        return Markup("—")
    value = _span(pts(x) if delta else pct(x), key)
    interval = pts_ci(c) if delta else ci(c)
    return value if interval == "—" else value + Markup(" (") + _span(interval, f"{key}_ci95") + Markup(")")


def _setting_table(run: Run, setting: str, rows: list[EvalRow]) -> Markup:
    labels = list(dict.fromkeys(r.label for r in rows))
    strategy = setting != ZERO_SHOT and not setting.endswith(f":{ZERO_SHOT}")
    head = ["benchmark", "n"]
    for label in labels:
        head += [f"{label}: accuracy % (95% CI)"] + (["Δ vs base, pts (95% CI)"] if label != "base" else []) + \
            (["Δ vs zero-shot, pts (95% CI)"] if strategy else [])
    by = {(r.label, r.bench): r for r in rows}
    body = []
    for bench in dict.fromkeys(r.bench for r in rows):
        got = [by[(x, bench)] for x in labels if (x, bench) in by]
        ns = "/".join(dict.fromkeys(str(r.n) for r in got if r.n is not None)) or "—"
        line: list[object] = [tag("b", bench) if bench == MACRO else bench, Cell(ns, f"{setting}|{bench}|n")]
        for label in labels:
            r = by.get((label, bench))
            k = f"{label}|{setting}|{bench}"
            pred = (Markup(" ") + link(run.rel(r.predictions), "⤓")) if r and r.predictions and r.predictions.is_file() else ""
            line.append(_value(r.accuracy, r.ci95, f"{k}|accuracy") + pred if r else "—")
            if label != "base":
                line.append(_value(r.delta_base, r.delta_base_ci95, f"{k}|delta_base", delta=True) if r else "—")
            if strategy:
                line.append(_value(r.delta_zero_shot, r.delta_zero_shot_ci95, f"{k}|delta_zero_shot", delta=True) if r else "—")
        body.append(line)
    return tag("h3", setting_name(setting)) + table(head, body, cls="benchmarks")


def benchmarks(run: Run) -> Markup:
    rows = eval_rows(run)
    if not rows:
        return not_run("no eval/<label>/ metrics")
    missing = [x for x in LABELS if x not in run.evals and x not in run.strategies]
    notes = join([_stage_note(run, f"eval_{x}") for x in LABELS])
    if missing:
        notes += tag("p", "not run: " + ", ".join(missing), cls="not-run")
    models: list[list[object]] = []
    for label in dict.fromkeys([*run.evals, *run.strategies]):
        if zs := run.evals.get(label):
            models.append([label, ZERO_SHOT, Cell(zs.model, f"model|{label}|{ZERO_SHOT}"),
                           ", ".join(f"{k}={v}" for k, v in zs.settings.items())])
        if st := run.strategies.get(label):
            models.append([label, "strategies", Cell(st.model, f"model|{label}|strategies"), ", ".join(st.strategies)])
    note = tag("p", "Accuracy in %, bootstrap 95% intervals; ⤓ links each result's per-question predictions. "
                    "Δ vs base compares the same setting on the base model (paired bootstrap over the same "
                    "questions); Δ vs zero-shot is the strategy run's own paired comparison with generative "
                    "zero-shot.", cls="note")
    tables = join([_setting_table(run, st, [r for r in rows if r.setting == st])
                   for st in dict.fromkeys(r.setting for r in rows)])
    return notes + table(["model", "run", "model spec", "settings"], models, cls="models") + note + tables \
        + _accuracy_chart(rows)


def _accuracy_chart(rows: list[EvalRow]) -> Markup:
    benches = list(dict.fromkeys(r.bench for r in rows if r.bench != MACRO)) + [MACRO]
    series = []
    for label, setting in dict.fromkeys((r.label, r.setting) for r in rows):
        by = {r.bench: r for r in rows if (r.label, r.setting) == (label, setting)}
        series.append(Series(f"{label} · {setting_name(setting)}",
                             [by[b].accuracy if b in by else None for b in benches],
                             [by[b].ci95 if b in by else None for b in benches]))
    return tag("h3", "Accuracy per benchmark (%), by model and setting") + grouped_bars(benches, series, "accuracy per benchmark")


def _stage2_chosen(run: Run) -> Markup:
    """How many different safe answers stage 2 trained toward: one string would make an ASR drop
    mean "learned to say this sentence"."""
    st = run.redteam_pairs or {}
    if "distinct_chosen" not in st:
        return tag("p", "Stage 2: distinct chosen answers not recorded.", cls="note")
    origin = ", ".join(f"{k} {v}" for k, v in (st.get("chosen_from") or {}).items())
    return tag("p", join(["Stage 2 (red-team pairs): ", tag("span", st["distinct_chosen"], data_key="dpo|2|distinct_chosen"),
                          f" distinct chosen answers over {st.get('pairs')} pairs (chosen from: {origin}); "
                          f"rejected answers judged unsafe by `{st.get('judge', '?')}`."]), cls="note")


def alignment(run: Run) -> Markup:
    parts = []
    if run.sft:
        s = run.sft
        parts.append(tag("h3", "SFT") + table(
            ["train examples", "eval examples", "eval loss before", "eval loss after", "train loss", "steps", "runtime s"],
            [[Cell(s.train_examples, "sft|train_examples"), s.eval_examples,
              Cell(num(s.eval_loss_before), "sft|eval_loss_before"),
              Cell(num(s.eval_loss_after), "sft|eval_loss_after"), num(s.train_loss), s.steps,
              num(s.train_runtime_s, 1)]]))
    else:
        parts.append(tag("h3", "SFT") + not_run("no sft/metrics.json"))
    stages = run.align.stages if run.align else []
    if stages:
        rows = []
        for k, st in enumerate(stages, 1):
            b, a = st.heldout_before, st.heldout_after
            rows.append([f"stage {st.stage}", st.train_pairs, st.heldout_pairs,
                         Cell(pct(b.preference_accuracy if b else None), f"dpo|{k}|pref_acc_before"),
                         Cell(pct(a.preference_accuracy if a else None), f"dpo|{k}|pref_acc_after"),
                         Cell(num(b.logp_margin if b else None), f"dpo|{k}|margin_before"),
                         Cell(num(a.logp_margin if a else None), f"dpo|{k}|margin_after"),
                         Cell(num(a.reward_margin if a else None, 4), f"dpo|{k}|reward_margin"),
                         Cell(pct(a.reward_accuracy if a else None), f"dpo|{k}|reward_accuracy"),
                         st.steps, num(st.train_loss)])
        parts.append(tag("h3", "DPO stages (held-out pairs)") + table(
            ["stage", "train pairs", "held-out pairs", "ranking acc. before %", "after %", "log-p margin before",
             "after", "reward margin", "reward acc. %", "steps", "train loss"], rows)
            + tag("p", "Reward accuracy and margin: DPO's implicit reward, β·(log-ratio to the stage's starting "
                       "model), ranks the chosen response above the rejected one (TRL's rewards/accuracies; "
                       "all ties before training). Ranking accuracy: the policy itself gives the chosen response "
                       "the higher log-probability; DPO seldom flips it (Chen et al. 2024, \"Preference "
                       "learning algorithms do not learn preference rankings\").")
            + _stage2_chosen(run))
    else:
        parts.append(tag("h3", "DPO stages") + not_run("no align/metrics.json"))
    refusal = run.align.refusal if run.align else None
    if refusal:
        rows = [[when, r.prompts, r.refused, Cell(pct(r.refusal_rate), f"refusal|{when}|rate"),
                 Cell(ci(refusal_ci(r)), f"refusal|{when}|ci95")]
                for when, r in (("before", refusal.before), ("after", refusal.after))]
        parts.append(tag("h3", "Refusal of held-out harmful prompts") +
                     table(["model", "prompts", "refused", "refusal rate %", "95% CI (Wilson)"], rows))
    else:
        parts.append(tag("h3", "Refusal of held-out harmful prompts") + not_run("no refusal figures in align/metrics.json"))
    return _stage_note(run, "sft") + _stage_note(run, "align") + join(parts)


def _asr(c: AsrCell | None) -> str:
    return f"{pct(c.asr)} ({ci(c.ci95)})" if c else "—"


def safety(run: Run) -> Markup:
    if not run.safety:
        return not_run("no safety/<label>/metrics.json")
    labels = list(run.safety)
    rows = []
    for label, m in run.safety.items():
        c = m.overall
        folder = run.root / "safety" / label
        files = join([link(run.rel(folder / f), f) for f in ("results.jsonl", "report.md") if (folder / f).is_file()], " · ")
        rows.append([label, Cell(c.n, f"asr|{label}|overall|n"), c.unsafe, c.undecided,
                     Cell(pct(c.asr), f"asr|{label}|overall|asr"), Cell(ci(c.ci95), f"asr|{label}|overall|ci95"),
                     Cell(judge_note(m), f"asr|{label}|overall|judge"), files])
    judges = join([tag("li", join([tag("b", label), ": ", judge_note(m)])) for label, m in run.safety.items()])
    out = [join([_stage_note(run, f"safety_{x}") for x in labels]),
           tag("p", "Attack success rate (ASR, % of judged cases answered unsafely; lower is safer) with Wilson 95% "
                    "intervals. Prompts and responses are harmful text: they stay in the linked files.", cls="note"),
           table(["model", "cases", "unsafe", "undecided", "ASR %", "95% CI", "judged by", "files"], rows),
           overrefusal_table(run),
           tag("p", "Every ASR figure in this section, per model:") + tag("ul", judges),
           judge_table(run)]
    styles = list(dict.fromkeys(s for m in run.safety.values() for s in m.by_style))
    meta = {s: v for label in labels for s, v in run.styles.get(label, {}).items()}
    if styles:
        seen = [("seen" if meta[s]["seen"] else "unseen") if s in meta else "?" for s in styles]
        srows = [[s, (meta.get(s) or {}).get("family") or "", sn] +
                 [Cell(_asr(run.safety[label].cell("style", s)), f"asr|{label}|style|{s}") for label in labels]
                 for s, sn in zip(styles, seen, strict=True)]
        cells = {label: [run.safety[label].cell("style", s) for s in styles] for label in labels}
        series = [Series(label, [c.asr if c else None for c in cs], [c.ci95 if c else None for c in cs])
                  for label, cs in cells.items()]
        out += [tag("h3", "ASR per attack style"),
                table(["style", "family", "in alignment"] + [f"{x} ASR % (95% CI)" for x in labels], srows),
                tag("p", "Styles in red were held out of red-team alignment (unseen).", cls="note"),
                grouped_bars([f"{s} (unseen)" if sn == "unseen" else s for s, sn in zip(styles, seen, strict=True)],
                             series, "ASR per attack style", ["unseen" if sn == "unseen" else None for sn in seen])]
    sources = list(dict.fromkeys(s for m in run.safety.values() for s in m.by_source))
    if sources:
        out += [tag("h3", "ASR per prompt source"), table(
            ["source"] + [f"{x} ASR % (95% CI)" for x in labels],
            [[s] + [Cell(_asr(run.safety[label].cell("source", s)), f"asr|{label}|source|{s}") for label in labels]
             for s in sources])]
    return join(out)


def judge_table(run: Run) -> Markup:
    """The judges' measured agreement with human labels (`aloe redteam judge-eval`), as the run recorded it."""
    judges = {m.meta.judge: m.meta.judge_agreement for m in run.safety.values()}
    rows = [[name, stem, Cell(pct(f.get("agreement")), f"judge|{name}|{stem}|agreement"), ci(f.get("agreement_ci95")),
             Cell(num(f.get("kappa"), 2), f"judge|{name}|{stem}|kappa"), pct(f.get("precision")), pct(f.get("recall")),
             pct(f.get("fpr")), f.get("decided"), agreement.get("fit_on") or "nothing fit"]
            for name, agreement in judges.items() if agreement
            for stem, f in (agreement.get("files") or {}).items()]
    unmeasured = [name for name, agreement in judges.items() if not agreement]
    parts = [tag("h3", "How the judges were measured")]
    if rows:
        parts.append(table(["judge", "human labels", "agreement %", "95% CI", "kappa", "precision %", "recall %",
                            "FPR %", "pairs", "fit"], rows))
    if unmeasured:
        parts.append(tag("p", f"Agreement with human labels NOT measured for: {', '.join(unmeasured)} "
                              "(aloe redteam judge-eval --judge SPEC --data-dir DIR --record).", cls="not-run"))
    return join(parts)


def overrefusal_table(run: Run) -> Markup:
    """ASR beside over-refusal (benign prompts refused): safety bought by refusing everything shows here."""
    if not run.overrefusal:
        return tag("h3", "ASR and over-refusal") + not_run("no safety/<label>/overrefusal/metrics.json")
    sets = list(dict.fromkeys(k for o in run.overrefusal.values() for k in o.by_set))
    rows = []
    for label in dict.fromkeys([*run.safety, *run.overrefusal]):
        o, m = run.overrefusal.get(label), run.safety.get(label)
        if o is None:
            detector = "—"
        elif (agree := o.detector_agreement) and agree.kappa is not None:
            detector = (f"{o.detector} ({pct(agree.agreement)}% agreement, kappa {agree.kappa:.2f} on {agree.n} "
                        "XSTest completions)")
        else:
            detector = f"{o.detector} (agreement NOT measured)"
        rows.append([label, Cell(_asr(m.overall if m else None), f"asr|{label}|overall|asr_ci"),
                     Cell(f"{pct(o.overall.rate)} ({ci(o.overall.ci95)})" if o else "—",
                          f"overrefusal|{label}|overall|rate"), o.overall.n if o else "—"]
                    + [Cell(f"{pct(cell.rate)} ({ci(cell.ci95)})", f"overrefusal|{label}|{k}|rate")
                       if o and (cell := o.by_set.get(k)) else "—" for k in sets] + [detector])
    return (tag("h3", "ASR and over-refusal") +
            tag("p", "Over-refusal: % of benign prompts (XSTest's safe prompts, alarming-sounding but legitimate "
                     "medical questions) that the model refused, Wilson 95% intervals. Lower is better on both; a "
                     "model that refuses everything has 0% ASR and 100% over-refusal.", cls="note") +
            table(["model", "ASR % (95% CI)", "over-refusal % (95% CI)", "benign prompts"]
                  + [f"{k} % (95% CI)" for k in sets] + ["refusals counted by"], rows))


OPEN_TITLES = {"judge_accuracy": "Judge accuracy (% of parsed verdicts that are correct)",
               "rouge_l": "ROUGE-L F1 against the reference", "embedding_similarity":
               "Embedding cosine similarity with the reference (all-MiniLM-L6-v2)",
               "relaxed_perplexity": "Relaxed perplexity of the reference answer (lower is better)"}


def _open_value(r: OpenRow | None, key: str, as_pct: bool, base: OpenRow | None = None) -> Markup:
    """A model's mean, or with `base` its paired delta to base's."""
    if r is None:
        return Markup("—")
    delta = base is not None
    x, c = (r.delta_base, r.delta_base_ci95) if delta else (r.mean, r.ci95)
    if as_pct:
        out = _value(x, c, key, delta)
    elif x is None:
        return Markup("—")
    else:
        digits = 2 if r.metric.endswith("perplexity") else 3
        fmt = (lambda v: f"{v:+.{digits}f}") if delta else (lambda v: num(v, digits))
        out = _span(fmt(x), key)
        if c:
            out += Markup(" (") + _span(f"{fmt(c[0])} to {fmt(c[1])}", f"{key}_ci95") + Markup(")")
    # A delta over fewer questions than either mean (an unparsable verdict on one side) says so, or
    # 50.0 beside 66.7 with a delta of +0.0 reads as a wrong sum.
    if base is not None and r.shared is not None and (r.shared != r.n or r.shared != base.n):
        out += Markup(" on ") + _span(r.shared, f"{key}_n") + Markup(" shared")
    return out


def openended(run: Run) -> Markup:
    rows = open_rows(run)
    if not rows:
        return join([_stage_note(run, f"openended_{x}") for x in LABELS]) + not_run("no eval/<label>/openended/metrics.json")
    labels = list(run.openended)
    models = table(["model", "model spec", "questions", "judge"],
                   [[label, m.model, m.overall.n,
                     Cell(open_judge_note(m), f"open|{label}|judge")] for label, m in run.openended.items()])
    note = tag("p", "Free-text answers to open medical questions. Means with bootstrap 95% intervals; Δ vs base is "
                    "the mean of per-question differences on the questions both models answered (paired bootstrap). "
                    "Judged figures are only as good as their judge, named above for each model; unparsable "
                    "verdicts are left out and counted.", cls="note")
    parts = [join([_stage_note(run, f"openended_{x}") for x in labels]), models, note]
    for metric, (_, as_pct) in OPEN_METRICS.items():
        mrows = [r for r in rows if r.metric == metric]
        if not mrows:
            continue
        by = {(r.label, r.group): r for r in mrows}
        head = ["questions", "n"] + [h for label in labels
                                     for h in [f"{label} (95% CI)"] + (["Δ vs base (95% CI)"] if label != "base" else [])]
        body = []
        for group in dict.fromkeys(r.group for r in mrows):
            got = [by[(x, group)] for x in labels if (x, group) in by]
            line: list[object] = [tag("b", group) if group == OPEN_ALL else group,
                                  "/".join(dict.fromkeys(str(r.n) for r in got))
                                  + "".join(f" [{r.unparsable} unparsable, {r.label}]" for r in got if r.unparsable)]
            for label in labels:
                r, k = by.get((label, group)), f"open|{label}|{group}|{metric}"
                line.append(_open_value(r, k, as_pct))
                if label != "base":
                    b = by.get(("base", group))
                    line.append(_open_value(r, f"{k}|delta_base", as_pct, b) if r and b else "—")
            body.append(line)
        parts.append(tag("h3", OPEN_TITLES[metric]) + table(head, body, cls="openended"))
    return join(parts)


def human_assessment(run: Run) -> Markup:
    """Clinicians' blind pairwise votes on the run's own open-ended answers, or the commands that collect them."""
    db, h = run.root / RUN_DIR_DB, run.human
    if h is None:
        labels = list(run.openended)
        if len(labels) < 2:
            return not_run("needs two models' open-ended answers, eval/<label>/openended/")
        # base against the last stage that answered: what the pipeline changed
        commands = [f"aloe human-eval build {shlex.quote(str(run.root))} --models {labels[0]},{labels[-1]}",
                    f"aloe human-eval add-rater NAME --db {shlex.quote(str(db))}",
                    f"aloe human-eval serve --input {shlex.quote(str(run.root / RUN_DIR_INPUT))} "
                    f"--db {shlex.quote(str(db))}"]
        state = f"no votes yet in {RUN_DIR_DB.as_posix()}" if db.is_file() else "no comparison set built"
        return (not_run(state) + tag("p", "Clinicians compare two models' answers to the same open questions "
                                          "blind; build the set from this run, give each rater a token, and "
                                          "serve the page. The report shows the votes when it is next rendered.",
                                     cls="note")
                + tag("pre", "\n".join(commands), id="humaneval-commands"))
    rates = h["win_rates"]
    note = tag("p", f"{h['votes']} blind pairwise votes from {h['raters']} rater(s) on this run's open-ended answers "
                    f"({RUN_DIR_DB.as_posix()}). A tie counts half a win; bootstrap 95% intervals. Bradley-Terry "
                    f"strengths sum to 1. As text: aloe human-eval results --db {shlex.quote(str(db))}", cls="note")
    wins = table(["model", "comparisons", "wins", "ties", "losses", "win rate %", "95% CI", "flags"],
                 [[m, Cell(r["n"], f"human|{m}|n"), r["wins"], r["ties"], r["losses"],
                   Cell(pct(r["win_rate"]), f"human|{m}|win_rate"), Cell(ci(r["ci95"]), f"human|{m}|ci95"),
                   ", ".join(f"{k}: {v}" for k, v in h["flags"].get(m, {}).items())] for m, r in rates.items()])
    pairs = table(["pair", "outcomes"], [[k, ", ".join(f"{m} {n}" for m, n in c.items())]
                                         for k, c in h["head_to_head"].items()])
    ranking = table(["rank", "model", "Bradley-Terry strength"],
                    [[i, m, Cell(num(x), f"human|{m}|bradley_terry")]
                     for i, (m, x) in enumerate(h["bradley_terry"].items(), 1)])
    return note + wins + tag("h3", "Head to head") + pairs + tag("h3", "Ranking") + ranking


def bias_section(run: Run) -> Markup:
    if not run.bias:
        return join([_stage_note(run, f"bias_{x}") for x in LABELS]) + not_run("no eval/<label>/bias/metrics.json")
    labels = list(run.bias)
    attrs = list(dict.fromkeys(a for m in run.bias.values() for a in m.attributes))
    models = table(["model", "model spec", "benchmarks", "questions", "scored"],
                   [[label, m.model, m.benchmarks, m.questions, f"option {m.target}s"] for label, m in run.bias.items()])
    body = []
    for attr in attrs:
        line: list[object] = [attr]
        for label in labels:
            a = run.bias[label].attributes.get(attr)
            if a is None:
                line += ["—"] * 4
                continue
            k = f"bias|{label}|{attr}"
            remark = ("uninformative: one answer letter for every probed item" if a.uninformative
                      else ", ".join(f"{why} {c}" for why, c in a.skipped.items()))
            line += [Cell(a.n, f"{k}|n"), Cell(pct(a.flip_rate), f"{k}|flip_rate"), Cell(ci(a.ci95), f"{k}|ci95"), remark]
        body.append(line)
    head = ["attribute"] + [h for label in labels for h in
                            (f"{label}: probed", "flip rate %", "95% CI", "skipped / note")]
    note = tag("p", "Share of probed MCQA items whose answer changes when only the patient's sex, age or ethnicity "
                    "(or a socioeconomic cue) is rewritten; percentile-bootstrap 95% intervals over items. Items "
                    "where the attribute is clinically relevant are skipped, with the reason.", cls="note")
    return join([_stage_note(run, f"bias_{x}") for x in labels]) + models + note + table(head, body, cls="bias")


def risks(run: Run) -> Markup:
    card = run.root / "report" / "risk_card.md"
    parts = [tag("p", join(["Healthcare risks named in the Aloe papers, with this run's figures. Full text: ",
                            link(run.rel(card), "risk_card.md")]))]
    for r in build_risks(run):
        parts.append(tag("h3", r.name) + tag("p", r.description) +
                     tag("ul", join([tag("li", join([tag("b", what), ": ", value])) for what, value in r.measured])) +
                     tag("p", "Mitigations: " + "; ".join(r.mitigations), cls="note"))
    return join(parts)


def data_card(run: Run) -> Markup:
    card = run.data_card
    if not card:
        return _stage_note(run, "curate") + not_run("no curate/data_card.json")
    final = card.get("by_source") or {}
    splits = card.get("splits") or {}
    parts = [tag("p", f"{splits.get('train', '?')} training and {splits.get('validation', '?')} validation "
                      f"conversations from {len(card.get('sources') or {})} sources ({card.get('data_dir')}); "
                      f"built in {card.get('seconds', '?')} s.", id="data-summary"),
             table(["source", "format", "group", "loaded", "in dataset"],
                   [[n, s.get("format"), s.get("group"), Cell(s.get("loaded"), f"source|{n}|loaded"),
                     Cell(final.get(n, 0), f"source|{n}|final")] for n, s in (card.get("sources") or {}).items()])]
    steps = [s for s in card.get("steps") or [] if isinstance(s, dict)]
    if steps:
        def dropped(s: dict[str, Any]) -> str:
            return ", ".join(f"{r} {sum(c.values())}" for r, c in (s.get("dropped") or {}).items())
        parts.append(tag("h3", "Steps") + table(
            ["step", "in", "added", "out", "dropped", "seconds"],
            [[s.get("step"), sum((s.get("in") or {}).values()), sum((s.get("added") or {}).values()),
              Cell(sum((s.get("out") or {}).values()), f"step|{s.get('step')}|out"), dropped(s), s.get("seconds")]
             for s in steps]))
    groups = (card.get("mix") or {}).get("groups") or {}
    if groups:
        parts.append(tag("h3", "Mix") + table(
            ["group", "available", "target", "taken", "target share", "actual share"],
            [[g, v.get("available"), v.get("target"), Cell(v.get("taken"), f"mix|{g}|taken"), v.get("target_share"),
              v.get("actual_share")] for g, v in groups.items()]))
    cot = card.get("cot") or {}
    parts.append(tag("h3", "Synthetic chain of thought") + tag(
        "p", f"teacher {cot.get('teacher', '—')}: {cot.get('verified', 0)} of {cot.get('attempted', 0)} MCQs got a chain "
             f"whose final answer matches gold (by try: {cot.get('verified_at_try') or {}})"
             + (f"; teacher error: {cot['error']}" if cot.get("error") else "."), id="cot-summary"))
    dc = card.get("decontamination") or {}
    removed = dc.get("removed") or []
    parts.append(tag("h3", "Decontamination") + tag(
        "p", f"{len(removed)} training items removed for overlap with the test splits of "
             f"{', '.join(dc.get('benchmarks') or []) or '—'} ({dc.get('benchmark_items', '?')} benchmark items; "
             f"{dc.get('ngram', '?')}-gram, coverage ≥ {dc.get('min_coverage', '?')}).", id="decontam-summary"))
    if removed:
        parts.append(table(["removed item", "source", "benchmark item", "method"],
                           [[r.get("id"), r.get("source"), r.get("benchmark_id"), r.get("method")] for r in removed]))
    files = [run.root / "curate" / f for f in ("data_card.md", "decontamination_report.jsonl", "duplicates.jsonl")]
    parts.append(tag("p", join([link(run.rel(f), f.name) for f in files if f.is_file()], " · ")))
    return join(parts)


def files(run: Run) -> Markup:
    found = (sorted(run.root.glob("eval/*/zero-shot/*/predictions.jsonl")) + sorted(run.root.glob("eval/*/strategies/*/*.jsonl"))
             + sorted(run.root.glob("safety/*/results.jsonl")) + sorted(run.root.glob("safety/*/report.md")))
    model = run.final_model_dir()
    if model and (model / "README.md").is_file():
        found.append(model / "README.md")
    if not found:
        return not_run("no per-question files")
    return tag("ul", join([tag("li", link(run.rel(f), f.relative_to(run.root).as_posix())) for f in found]))


SECTIONS: list[tuple[str, str, Callable[[Run], Markup]]] = [
    ("pipeline", "Pipeline", pipeline), ("timings", "Where the time went", timings),
    ("benchmarks", "Benchmarks", benchmarks),
    ("openended", "Open-ended answers", openended), ("humaneval", "Human assessment", human_assessment),
    ("alignment", "Alignment", alignment), ("safety", "Safety", safety), ("bias", "Bias probes", bias_section),
    ("risks", "Risk card", risks), ("data", "Data card", data_card), ("files", "Per-question files", files),
]


def _guarded(fn: Callable[[Run], Markup], run: Run) -> Markup:
    # The runner renders after any failure: a file of an unexpected shape costs its section, not the page.
    try:
        return fn(run)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        return tag("p", f"not rendered: a file of this section has an unexpected shape ({type(e).__name__}: {e})",
                   cls="warn")


def render_html(run: Run) -> str:
    name = (run.manifest or {}).get("name") or run.root.name
    nav = tag("nav", join([link(f"#{sid}", title) for sid, title, _ in SECTIONS]))
    sections = join([_section(sid, title, _guarded(fn, run)) for sid, title, fn in SECTIONS])
    problems = join([tag("li", p) for p in dict.fromkeys(run.problems)])  # known once the sections are read
    body = header(run) + nav + (tag("ul", problems, cls="warn") if problems else Markup("")) + sections
    final = final_label(run)
    return (Markup("<!doctype html>\n") + tag("html", tag("head", Markup('<meta charset="utf-8">') + tag("title", f"aloe report: {name}")
                                               + tag("style", Markup(CSS)))
                                      + tag("body", body, data_final_model=final), lang="en") + "\n")


def render_report(run_dir: str | Path) -> Path:
    run = load_run(run_dir)
    out = run.root / "report" / "index.html"
    write_text(out, render_html(run))
    return out
