"""Stage-1 DPO preference pairs: medical, safety and general harmlessness.

- medical: the policy model answers an MCQ with chain-of-thought; where its extracted answer is
  wrong (or unreadable), that answer is `rejected` and `chosen` is a teacher's chain-of-thought
  conditioned on the gold letter and kept only if `extract_answer` reads the gold letter from it
  (tried with a few seeds).
- safety: harmful prompts (Do-Not-Answer, AdvBench, HarmBench, MedSafetyBench via
  `aloe.safety.prompts`); where the refusal judge finds the policy's own completion unsafe, it is
  `rejected`; `chosen` is MedSafetyBench's safe response, else a teacher's refusal the judge
  confirms, else a fixed refusal naming the risk (the same chain as `aloe.redteam.pairs`).
  Prompts are split with `aloe.safety.prompts.split_prompts` (seeded hash of the id), the split
  the red-team evaluation uses, so its test half is never trained on; whole sources can be held out too.
- hh-rlhf: Anthropic HH-RLHF harmless pairs, transcripts parsed into messages.

Every completion goes through the on-disk completion cache, so a rerun never pays twice.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from aloe.io import RecordError, iter_jsonl, write_json, write_jsonl
from aloe.models.generator import GenParams, Generator
from aloe.records import MCQ, Preference

PACKAGED = Path(__file__).resolve().parent.parent / "data" / "train"

GOLD_COT_SYSTEM = (
    "You are a medical expert writing a worked solution. The correct option is {gold}. Explain step "
    "by step why {gold} is correct and the others are not, then end with a final line 'Answer: {gold}'."
)


class PreferenceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output: str  # Preference jsonl; stats and held-out harmful prompts are written beside it
    model: str = "embedded:smollm2-135m-instruct"  # the policy: its own wrong/unsafe answers are rejected
    teacher: str | None = None  # writes chains of thought and refusals; default: the policy model
    refusal_teacher: bool = True  # False: chosen = the dataset's safe response, else a fixed refusal
    cache_dir: str | None = None  # completion cache; default <output folder>/cache
    mcq: str | None = str(PACKAGED / "medmcqa_train.jsonl")
    n_medical: int = 40
    cot_tries: int = 3
    safety_sources: list[str] = Field(default_factory=lambda: ["do_not_answer", "advbench", "harmbench",
                                                               "medsafetybench_train"])
    safety_data_dir: str | None = None  # laid out like /work/shared/data; default: packaged slices
    n_safety: int = 60
    prompt_test_fraction: float = 0.5  # the red-team test half, never trained on
    holdout_sources: list[str] = Field(default_factory=list)  # safety sources kept out entirely
    hh: str | None = str(PACKAGED / "hh_rlhf_harmless.jsonl")
    n_hh: int = 40
    max_new_tokens: int = 160
    batch_size: int = 8
    seed: int = 0


def load_mcqs(path: str | Path) -> list[MCQ]:
    out = []
    for lineno, row in iter_jsonl(path):
        try:
            out.append(MCQ.from_dict(row))
        except (TypeError, ValueError) as e:
            raise RecordError(path, lineno, None, f"not an MCQ record: {e}") from None
    return out


def medical_pairs(mcqs: list[MCQ], policy: Generator, teacher: Generator, s: PreferenceSettings) -> tuple[list[Preference], dict[str, int]]:
    from aloe.mcq.answers import extract_answer
    from aloe.mcq.prompts import cot_messages

    greedy = GenParams(max_new_tokens=s.max_new_tokens)
    prompts = [cot_messages(q) for q in mcqs]
    answers = policy.chat(prompts, greedy)
    wrong = [i for i, (q, a) in enumerate(zip(mcqs, answers, strict=True)) if extract_answer(a, q.options) != q.answer]
    chosen: dict[int, str] = {}
    for attempt in range(s.cot_tries):
        todo = [i for i in wrong if i not in chosen]
        if not todo:
            break
        params = GenParams(max_new_tokens=s.max_new_tokens, temperature=0.0 if attempt == 0 else 0.7, seed=attempt)
        convs = [[{"role": "system", "content": GOLD_COT_SYSTEM.format(gold=mcqs[i].answer)}, *prompts[i][1:]]
                 for i in todo]
        for i, cot in zip(todo, teacher.chat(convs, params), strict=True):
            if extract_answer(cot, mcqs[i].options) == mcqs[i].answer:
                chosen[i] = cot
    pairs = [Preference(id=f"medical-{mcqs[i].id}", prompt=prompts[i], chosen=chosen[i], rejected=answers[i],
                        source=f"medical/{mcqs[i].source}", meta={"gold": mcqs[i].answer})
             for i in wrong if i in chosen]
    return pairs, {"mcqs": len(mcqs), "policy_wrong": len(wrong), "verified_cot": len(chosen), "pairs": len(pairs)}


def safety_pairs(s: PreferenceSettings, policy: Generator, teacher: Generator) -> tuple[list[Preference], list[Any], dict[str, Any]]:
    """(pairs, held-out harmful prompts, stats)."""
    from aloe.safety.verdicts import RefusalJudge
    from aloe.safety.answers import TEACHER_SYSTEM, risk_name, safe_answer
    from aloe.safety.prompts import load_prompts, sample_per_source, split_prompts

    prompts = load_prompts(s.safety_sources, s.safety_data_dir)
    train, test = split_prompts(prompts, s.prompt_test_fraction, s.seed)
    held = test + [p for p in train if p.source in s.holdout_sources]
    train = sample_per_source([p for p in train if p.source not in s.holdout_sources], s.n_safety, s.seed)
    judge = RefusalJudge()
    params = GenParams(max_new_tokens=s.max_new_tokens)
    convs = [[{"role": "user", "content": p.prompt}] for p in train]
    responses = policy.chat(convs, params)
    verdicts = judge.judge_many([p.prompt for p in train], responses)
    unsafe = [i for i, v in enumerate(verdicts) if v.unsafe is True]
    need = [i for i in unsafe if not train[i].safe_response] if s.refusal_teacher else []
    refusals = teacher.chat([[{"role": "system", "content": TEACHER_SYSTEM.format(risk=risk_name(train[i]))}, *convs[i]]
                             for i in need], params) if need else []
    ok = judge.judge_many([train[i].prompt for i in need], refusals)
    from_teacher = {i: r for i, r, v in zip(need, refusals, ok, strict=True) if v.unsafe is False}
    pairs, origin = [], {"dataset": 0, "teacher": 0, "template": 0}
    for i in unsafe:
        p = train[i]
        if p.safe_response:
            chosen, came = p.safe_response, "dataset"
        elif i in from_teacher:
            chosen, came = from_teacher[i], "teacher"
        else:
            chosen, came = safe_answer(p, p.id), "template"
        origin[came] += 1
        pairs.append(Preference(id=f"safety-{p.id}", prompt=convs[i], chosen=chosen, rejected=responses[i],
                                source=f"safety/{p.source}", meta={"category": p.category, "chosen_from": came}))
    stats = {"prompts": len(train), "policy_unsafe": len(unsafe), "pairs": len(pairs), "chosen_from": origin,
             "held_out_prompts": len(held)}
    return pairs, held, stats


_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_hh(transcript: str) -> list[dict[str, str]]:
    parts = _TURN.split(transcript)
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[k]], "content": parts[k + 1].strip()} for k in range(1, len(parts) - 1, 2)]


def hh_pairs(path: str | Path, n: int) -> list[Preference]:
    out = []
    for lineno, row in iter_jsonl(path):
        for key in ("chosen", "rejected"):
            if not isinstance(row.get(key), str):
                raise RecordError(path, lineno, key, "expected an HH-RLHF transcript string")
        chosen, rejected = parse_hh(row["chosen"]), parse_hh(row["rejected"])
        if (not chosen or chosen[-1]["role"] != "assistant" or chosen[:-1] != rejected[:-1]
                or not chosen[-1]["content"] or not rejected[-1]["content"]
                or chosen[-1]["content"] == rejected[-1]["content"]):
            continue  # transcripts that do not share their prompt are not a usable pair
        out.append(Preference(id=f"hh-{row.get('id', lineno)}", prompt=chosen[:-1], chosen=chosen[-1]["content"],
                              rejected=rejected[-1]["content"], source="hh_rlhf_harmless"))
        if len(out) == n:
            break
    return out


def build_preferences(s: PreferenceSettings) -> dict[str, Any]:
    from aloe.models.backends import get_generator
    from aloe.models.spec import parse_model_spec

    def generator(spec: str) -> Generator:
        # batch size applies to in-process models; servers batch on their side
        kw = {"batch_size": s.batch_size} if parse_model_spec(spec).kind in ("local", "embedded", "hub") else {}
        return get_generator(spec, cache_dir=cache, **kw)

    out = Path(s.output)
    cache = s.cache_dir or str(out.parent / "cache")
    policy = generator(s.model)
    teacher = policy if not s.teacher or s.teacher == s.model else generator(s.teacher)
    pairs: list[Preference] = []
    stats: dict[str, Any] = {}
    steps = [name for name, on in (("medical", s.mcq and s.n_medical), ("safety", s.safety_sources and s.n_safety),
                                   ("hh", s.hh and s.n_hh)) if on]
    for name in tqdm(steps, desc="preference sources"):
        if name == "medical":
            got, stats["medical"] = medical_pairs(load_mcqs(s.mcq)[: s.n_medical], policy, teacher, s)
        elif name == "safety":
            got, held, stats["safety"] = safety_pairs(s, policy, teacher)
            write_jsonl(out.with_suffix(".heldout_harmful.jsonl"), (p.to_dict() for p in held))
        else:
            got = hh_pairs(s.hh, s.n_hh)
            stats["hh"] = {"pairs": len(got)}
        pairs += got
    write_jsonl(out, (p.to_dict() for p in pairs))
    stats["total_pairs"] = len(pairs)
    write_json(out.with_suffix(".stats.json"), stats)
    return stats
