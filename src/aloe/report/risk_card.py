"""The risk card: the healthcare risks the Aloe papers name, each with this run's measured figures
and the mitigations the run put in place; "not measured in this run" wherever a figure is absent."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path

from aloe.io import write_text
from aloe.redteam.metrics import AsrCell, SafetyMetrics
from aloe.report.html import ci, pct
from aloe.report.results import (
    MACRO,
    OPEN_ALL,
    ZERO_SHOT,
    eval_rows,
    judge_note,
    open_judge_note,
    open_rows,
    pooled_asr,
    refusal_ci,
)
from aloe.report.rundir import Run, load_run

NOT_MEASURED = "not measured in this run"
IMPERSONATION_STYLES = ("licensed_physician", "roleplay_aim")
# General harmful-request sets (weapons, drugs, crime...); MedSafetyBench is medical-ethics harm.
DANGEROUS_SOURCES = ("advbench", "harmbench", "strongreject", "malicious_instruct", "do_not_answer")


@dataclass
class Risk:
    name: str
    description: str
    measured: list[tuple[str, str]] = field(default_factory=list)
    mitigations: list[str] = field(default_factory=list)


def asr_text(c: AsrCell | None) -> str:
    if c is None or c.asr is None:
        return NOT_MEASURED
    return f"{pct(c.asr)} % (95% CI {ci(c.ci95)}, n={c.n}, undecided {c.undecided})"


def _overrefusal(run: Run) -> list[tuple[str, str]]:
    """The cost side of safety: benign prompts refused. Safety bought by refusing everything shows here."""
    out = []
    for label, o in run.overrefusal.items():
        c, agree = o.overall, o.detector_agreement
        how = (f"refusals counted by `{o.detector}`, {pct(agree.agreement)} % agreement with XSTest's "
               f"human refusal labels (n={agree.n})" if agree else f"refusals counted by `{o.detector}` "
               "(agreement NOT measured)")
        value = (f"{pct(c.rate)} % of {c.n} benign prompts refused (95% CI {ci(c.ci95)}); {how}"
                 if c.rate is not None else NOT_MEASURED)
        out.append((f"Over-refusal — {label}", value))
    return out or [("Over-refusal", NOT_MEASURED)]


def _open_factuality(run: Run) -> list[tuple[str, str]]:
    """Judged open-ended accuracy per model, with its judge, beside the reference overlap."""
    rows = {(r.label, r.metric): r for r in open_rows(run) if r.group == OPEN_ALL}
    out = []
    for label, m in run.openended.items():
        j, rouge = rows.get((label, "judge_accuracy")), rows.get((label, "rouge_l"))
        judged = (f"{pct(j.mean)} % judged correct (95% CI {ci(j.ci95)}, n={j.n}, unparsable {j.unparsable})"
                  if j else "no judged figure")
        overlap = f"; ROUGE-L {rouge.mean:.3f} (n={rouge.n})" if rouge else ""
        out.append((f"open-ended answers — {label}", f"{judged}{overlap}; {open_judge_note(m)}"))
    return out or [("open-ended factuality (judged)", NOT_MEASURED)]


def final_label(run: Run) -> str | None:
    labels = list(dict.fromkeys([*run.evals, *run.strategies, *run.safety]))
    return "aligned" if "aligned" in labels else (labels[-1] if labels else None)


def _per_model(run: Run, what: str, cell: Callable[[SafetyMetrics], AsrCell | None]) -> list[tuple[str, str]]:
    return ([(f"{what} — {label}", f"{asr_text(cell(m))}; {judge_note(m)}") for label, m in run.safety.items()]
            or [(what, NOT_MEASURED)])


def _alignment_mitigations(run: Run) -> list[str]:
    out = []
    stages = run.align.stages if run.align else []
    for k, st in enumerate(stages, 1):
        kind = "medical, general and safety preference pairs" if k == 1 else "red-team pairs (jailbreak-styled harmful prompts, safe answer chosen)"
        out.append(f"DPO stage {k} on {st.train_pairs} {kind}")
    if run.align and (refusal := run.align.refusal):
        b, a = refusal.before, refusal.after
        out.append(f"refusal rate on held-out harmful prompts {pct(b.refusal_rate)} % before alignment, "
                   f"{pct(a.refusal_rate)} % after (95% CI {ci(refusal_ci(a))}, n={a.prompts})")
    return out


def build_risks(run: Run) -> list[Risk]:
    final = final_label(run)
    align = _alignment_mitigations(run) or ["no preference alignment ran in this run"]
    card = "the model card states the model is not a healthcare professional and is for research use only"

    impersonation = Risk(
        "Impersonating a healthcare professional",
        "The model may present itself as, or be taken for, a licensed clinician, lending false authority to its answers.",
        _per_model(run, "ASR, licensed_physician style", lambda m: m.cell("style", "licensed_physician"))
        + _per_model(run, "ASR, persona family (role-play jailbreaks)", lambda m: m.cell("family", "persona")),
        [*align, card])

    final_rows = [r for r in eval_rows(run) if r.label == final and r.setting == ZERO_SHOT]
    acc = [r for r in final_rows if r.bench != MACRO]
    macro = next((r for r in final_rows if r.bench == MACRO), None)
    decisions = Risk(
        "Unsupervised clinical decision making",
        "Answers used for diagnosis or treatment without a professional's review can harm patients; "
        "benchmark accuracy bounds how often the model is wrong on exam questions.",
        ([(f"MCQA error rate, {final} model (macro over {len(acc)} benchmarks)",
           f"{pct(1 - macro.accuracy)} %" if macro and macro.accuracy is not None else NOT_MEASURED)]
         + [(f"MCQA accuracy, {r.bench}", f"{pct(r.accuracy)} % (95% CI {ci(r.ci95)}, n={r.n})") for r in acc])
        + _per_model(run, "ASR on MedSafetyBench (requests violating medical ethics)",
                     lambda m: m.cell("source", "medsafetybench")),
        [card, "intended use: decision support reviewed by a qualified professional, never autonomous care"])

    dangerous = Risk(
        "Access to dangerous information",
        "Medical knowledge extends to toxic doses, drug synthesis and weapons; jailbreaks can extract it.",
        _per_model(run, "ASR on dangerous-information sources (" + ", ".join(DANGEROUS_SOURCES) + ")",
                   lambda m: pooled_asr(m, "source", list(DANGEROUS_SOURCES)))
        + _per_model(run, "ASR overall (all sources and styles)", lambda m: m.overall)
        + _per_model(run, "ASR on attack styles held out of alignment (unseen)", lambda m: m.cell("seen", "unseen"))
        + _overrefusal(run),
        align)

    misinformation = Risk(
        "Misinformation and hallucination",
        "Fluent, confident but wrong medical statements; open-ended factuality is harder to bound than MCQA accuracy.",
        [(f"MCQA error rate, {final} model", f"{pct(1 - macro.accuracy)} %" if macro and macro.accuracy is not None
          else NOT_MEASURED), *_open_factuality(run)],
        ["training chains of thought kept only when their final answer matched the gold answer"
         if (run.data_card or {}).get("cot", {}).get("verified") else "no verified chain-of-thought data in this run",
         "benchmarks decontaminated from training data, so the error rates are not flattered by leakage"
         if run.data_card else "decontamination " + NOT_MEASURED])

    flips = [(f"answer flip rate, {attr} — {label}",
              f"{pct(a.flip_rate)} % (95% CI {ci(a.ci95)}, n={a.n})"
              + ("; uninformative: the model gave the same letter to every probed question" if a.uninformative else ""))
             for label, m in run.bias.items() for attr, a in m.attributes.items() if a.n and a.flip_rate is not None]
    bias = Risk(
        "Bias",
        "Answers that change with a patient's sex, ethnicity or other descriptor when nothing clinical changed.",
        flips or [("counterfactual answer flip rate", NOT_MEASURED)],
        ["counterfactual bias probes (aloe.evaluate.bias) measure it; no debiasing training in this recipe"])
    return [impersonation, decisions, dangerous, misinformation, bias]


def risk_markdown(run: Run) -> str:
    name = (run.manifest or {}).get("name") or run.root.name
    lines = [f"# Risk card: {name}", "",
             ("Healthcare risks named in the Aloe papers, with this run's measured figures. ASR is the "
             "attack success rate among judged cases (lower is safer), with Wilson 95% intervals."), ""]
    for r in build_risks(run):
        lines += [f"## {r.name}", "", r.description, "", "Measured:", ""]
        lines += [f"- {what}: {value}" for what, value in r.measured]
        lines += ["", "Mitigations in place:", ""] + [f"- {m}" for m in r.mitigations] + [""]
    return "\n".join(lines)


def write_risk_card(run_dir: str | Path) -> Path:
    run = load_run(run_dir)
    out = run.root / "report" / "risk_card.md"
    write_text(out, risk_markdown(run))
    return out
