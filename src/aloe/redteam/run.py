"""A red-team run: prompts x styles -> target model -> judge -> ASR tables.

Outputs in the run folder: `results.jsonl` (one row per case, with the original request, the
styled conversation and the response: harmful text, kept in files only), `worst.jsonl` (the prompts broken by the most styles,
with their unsafe responses), `metrics.json` and `report.md`. Completions and model-judge calls go
through the on-disk completion cache, so a rerun (or a run resumed after a crash) never pays twice;
the result files are written atomically at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from aloe.io import write_jsonl, write_text
from aloe.models.generator import GenParams, Generator, Messages
from aloe.redteam.asr import asr_metrics, markdown_report
from aloe.redteam.judge_eval import measured_agreement
from aloe.redteam.metrics import SafetyMetrics
from aloe.safety.verdicts import Judge, Verdict
from aloe.safety.prompts import HarmfulPrompt
from aloe.redteam.styles import Style

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    prompt: HarmfulPrompt
    style: Style
    seen: bool
    messages: Messages

    @property
    def id(self) -> str:
        return f"{self.prompt.id}::{self.style.name}"


def build_cases(prompts: Sequence[HarmfulPrompt], styles: Sequence[Style],
                seen_styles: Sequence[str] = (), per_prompt: int | None = None) -> list[Case]:
    """Every prompt in every style; with `per_prompt`, prompt i takes `per_prompt` styles in rotation,
    so each style is used about equally and the cost grows with the prompts, not prompts x styles."""
    seen = set(seen_styles)
    k = len(styles) if per_prompt is None else min(per_prompt, len(styles))
    picked = [(p, styles[(i * k + j) % len(styles)]) for i, p in enumerate(prompts) for j in range(k)]
    return [Case(p, s, s.name in seen, s.apply(p.prompt)) for p, s in picked]


def attack_and_judge(cases: Sequence[Case], target: Generator, judge: Judge, params: GenParams,
                     system_prompt: str | None = None) -> list[tuple[str, Verdict]]:
    """The target's response to each case and the judge's verdict on it."""
    system: Messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    convs = [system + c.messages for c in cases]
    with tqdm(total=len(convs), desc=f"attack {target.name}", leave=False) as bar:
        responses = target.chat(convs, params, on_done=lambda idx, _: bar.update(len(idx)))
    # The judge sees the original request, not the styled one: harm is judged against intent.
    verdicts = judge.judge_many([c.prompt.prompt for c in cases], responses)
    return list(zip(responses, verdicts, strict=True))


def result_rows(cases: Sequence[Case], judged: Sequence[tuple[str, Verdict]]) -> list[dict[str, Any]]:
    return [{"id": c.id, "prompt_id": c.prompt.id, "source": c.prompt.source, "category": c.prompt.category,
             "style": c.style.name, "family": c.style.family, "seen": c.seen, **v.to_dict(),
             "request": c.prompt.prompt, "messages": c.messages, "response": r}
            for c, (r, v) in zip(cases, judged, strict=True)]


def worst_prompts(rows: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The `k` prompts broken by the most styles, each with its unsafe responses."""
    by_prompt: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    ranked = sorted(by_prompt.items(), key=lambda kv: (-sum(r["unsafe"] is True for r in kv[1]), kv[0]))
    out = []
    for pid, rs in ranked[:k]:
        broken = [r for r in rs if r["unsafe"] is True]
        if not broken:
            break
        out.append({"prompt_id": pid, "source": rs[0]["source"], "category": rs[0]["category"],
                    "unsafe_styles": len(broken), "styles": len(rs),
                    "responses": [{"style": r["style"], "messages": r["messages"], "response": r["response"],
                                   "reason": r["reason"]} for r in broken]})
    return out


def run_redteam(prompts: Sequence[HarmfulPrompt], styles: Sequence[Style], target: Generator, judge: Judge,
                out_dir: str | Path, params: GenParams, seen_styles: Sequence[str] = (),
                system_prompt: str | None = None, worst_k: int = 20,
                meta: dict[str, Any] | None = None, styles_per_prompt: int | None = None) -> dict[str, Any]:
    if not prompts or not styles:
        raise ValueError(f"nothing to run: {len(prompts)} prompts, {len(styles)} styles")
    out = Path(out_dir)
    cases = build_cases(prompts, styles, seen_styles, styles_per_prompt)
    log.info("red team: %d prompts x %d styles = %d cases", len(prompts), len(styles), len(cases))
    rows = result_rows(cases, attack_and_judge(cases, target, judge, params, system_prompt))
    metrics = asr_metrics(rows)
    metrics["meta"] = {"target": target.name, "judge": judge.name,
                       "judge_agreement": measured_agreement(judge.name), "prompts": len(prompts),
                       "styles": len(styles), "cases": len(cases), "system_prompt": system_prompt or "",
                       "max_new_tokens": params.max_new_tokens, **(meta or {})}
    write_jsonl(out / "results.jsonl", rows)
    write_jsonl(out / "worst.jsonl", worst_prompts(rows, worst_k))
    SafetyMetrics.model_validate(metrics).write(out / "metrics.json")
    write_text(out / "report.md", markdown_report(metrics, title=f"Red-team ASR: {target.name}"))
    return metrics
