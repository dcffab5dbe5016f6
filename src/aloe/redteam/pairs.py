"""Stage-2 DPO pairs from red teaming: prompt = the styled harmful request, rejected = the
target model's own response judged unsafe, chosen = a safe response.

The chosen side comes, in order of preference, from the prompt set (MedSafetyBench ships safe
responses), from a teacher model asked to refuse (kept only if the refusal judge agrees it is a
refusal), or from one of several safe answers that name the risk (varied, so DPO never learns one string). Only the training side of both splits is
used (prompts by seeded hash, styles by held-out family), so the red-team evaluation on the test
side stays clean.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aloe.io import write_jsonl
from aloe.models.generator import GenParams, Generator
from aloe.records import Preference
from aloe.safety.answers import TEACHER_SYSTEM, risk_name, safe_answer
from aloe.safety.verdicts import Judge, RefusalJudge
from aloe.safety.prompts import HarmfulPrompt, split_prompts
from aloe.redteam.run import Case, attack_and_judge, build_cases
from aloe.redteam.styles import StyleSplit

def _chosen_from_teacher(cases: Sequence[Case], teacher: Generator, params: GenParams) -> list[str | None]:
    convs = [[{"role": "system", "content": TEACHER_SYSTEM.format(risk=risk_name(c.prompt))}, *c.messages]
             for c in cases]
    texts = teacher.chat(convs, params)
    verdicts = RefusalJudge().judge_many([c.prompt.prompt for c in cases], texts)
    return [t if v.unsafe is False else None for t, v in zip(texts, verdicts, strict=True)]


def build_redteam_pairs(prompts: Sequence[HarmfulPrompt], styles: StyleSplit, target: Generator, judge: Judge,
                        out_path: str | Path, params: GenParams, teacher: Generator | None = None,
                        test_fraction: float = 0.5, seed: int = 0,
                        system_prompt: str | None = None, styles_per_prompt: int | None = None) -> dict[str, Any]:
    """Write Preference jsonl; returns counts (cases, unsafe, pairs, where chosen came from)."""
    train_prompts, _ = split_prompts(prompts, test_fraction, seed)
    cases = build_cases(train_prompts, styles.train, [s.name for s in styles.train], styles_per_prompt)
    judged = attack_and_judge(cases, target, judge, params, system_prompt)
    unsafe = [(c, r, v) for c, (r, v) in zip(cases, judged, strict=True) if v.unsafe is True]
    need_teacher = [c for c, _, _ in unsafe if not c.prompt.safe_response]
    from_teacher = dict(zip((c.id for c in need_teacher),
                            _chosen_from_teacher(need_teacher, teacher, params) if teacher and need_teacher else [],
                            strict=False))
    prefs, origin = [], Counter()
    for c, rejected, v in unsafe:
        if c.prompt.safe_response:
            chosen, came_from = c.prompt.safe_response, "dataset"
        elif from_teacher.get(c.id):
            chosen, came_from = from_teacher[c.id], "teacher"
        else:
            chosen, came_from = safe_answer(c.prompt, c.id), "template"
        origin[came_from] += 1
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        prefs.append(Preference(
            id=f"redteam-{c.id}", prompt=system + c.messages, chosen=chosen, rejected=rejected,
            source=f"redteam/{c.prompt.source}",
            meta={"style": c.style.name, "family": c.style.family, "category": c.prompt.category,
                  "judge": judge.name, "judge_reason": v.reason, "chosen_from": came_from,
                  "target": target.name}))
    write_jsonl(out_path, (p.to_dict() for p in prefs))
    return {"cases": len(cases), "unsafe": len(unsafe), "pairs": len(prefs), "chosen_from": dict(origin),
            "distinct_chosen": len({p.chosen for p in prefs}),
            "train_prompts": len(train_prompts), "train_styles": len(styles.train),
            "held_out_families": sorted(styles.test_families)}
