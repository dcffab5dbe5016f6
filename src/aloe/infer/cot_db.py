"""Medprompt's self-generated chain-of-thought database: the kNN worked examples as the model wrote them.

Medprompt (Nori et al. 2023) and HPAI's prompt_engine do not show the datasets' explanations as
few-shot examples: the model answers every pool question with a chain of thought first, and only
the chains whose final answer matches gold are kept. Each attempt shows the options in another
shuffled order (its answer is mapped back to the original letter before the check); the first is
greedy, the retries sample at `temperature` with their own seeds.

The database is a JSONL file, one verified chain per pool question, with a meta JSON beside it
(`<name>.meta.json`: model fingerprint, pool fingerprint, settings, counts). Completions go through
the on-disk completion cache, so a build killed midway pays again only for what was still
decoding, and a rerun with the same inputs finds the finished meta and loads no model at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from aloe.infer.shuffle import permutations, shown_options, to_original
from aloe.io import iter_jsonl, read_json, require_file, write_json, write_jsonl
from aloe.mcq.answers import extract_answer
from aloe.mcq.benchmarks import questions_fingerprint
from aloe.mcq.prompts import cot_messages
from aloe.models.completion_cache import CachedGenerator
from aloe.models.generator import GenParams, Generator
from aloe.records import MCQ

FORMAT = 1
# A last line that only states the answer ("Answer: B", "**Final answer: (B)**"): cot_messages adds
# the canonical "Answer: X" line to every worked example, so the model's own one is dropped.
_ANSWER_LINE = re.compile(r"[\W_]*(?:final\s+)?answer\s*(?:is|:)?[\W_]*[A-J][\W_]*", re.IGNORECASE)


def meta_path(db: Path) -> Path:
    return db.with_suffix(".meta.json")


def model_identity(model: str | Generator) -> str:
    """What a database records as its model: the weights' fingerprint for a spec, the completion
    cache's identity (or the name) for a generator, as strategies see it at run time."""
    if isinstance(model, str):
        from aloe.models.loading import weights_fingerprint

        return weights_fingerprint(model)
    return getattr(model, "identity", None) or model.name


def _cached(model: str | Generator, cache_dir: Path, batch_size: int) -> Generator:
    if isinstance(model, CachedGenerator):
        return model
    if isinstance(model, str):
        from aloe.models.backends import get_generator

        return get_generator(model, cache_dir=str(cache_dir), batch_size=batch_size)
    return CachedGenerator(model, cache_dir)


def build_cot_db(model: str | Generator, pool: Sequence[MCQ], out: str | Path, *, attempts: int = 3,
                 seed: int = 0, max_new_tokens: int = 256, temperature: float = 0.7, shuffle: bool = True,
                 cache_dir: str | Path | None = None, batch_size: int = 8, progress: bool = True) -> dict[str, Any]:
    """Write the verified chains of thought of `model` on `pool` to `out`; returns the meta.

    `cache_dir` defaults to `<out stem>.cache` beside the database.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    if attempts > 1 and temperature <= 0:
        raise ValueError("retries need temperature > 0: at 0 they would repeat the first attempt's answer")
    if len({q.id for q in pool}) != len(pool):
        raise ValueError("CoT database pool: ids are not unique")
    out = Path(out)
    identity = model_identity(model)
    expected = {"format": FORMAT, "model": identity,
                "pool": {"fingerprint": questions_fingerprint(pool), "size": len(pool),
                         "sources": sorted({q.source for q in pool})},
                "settings": {"attempts": attempts, "seed": seed, "max_new_tokens": max_new_tokens,
                             "temperature": temperature, "shuffle": shuffle}}
    if out.is_file() and meta_path(out).is_file():
        meta = read_json(meta_path(out))
        if {k: meta.get(k) for k in expected} == expected:
            return meta
    gen = _cached(model, Path(cache_dir) if cache_dir is not None else out.with_suffix(".cache"), batch_size)

    orders = {q.id: permutations(q, attempts, seed) if shuffle else [list(q.options)] * attempts for q in pool}
    verified: dict[str, dict[str, Any]] = {}
    pending, tried, by_attempt = list(pool), 0, []
    for attempt in range(attempts):
        if not pending:
            break
        params = GenParams(max_new_tokens=max_new_tokens, temperature=0.0 if attempt == 0 else temperature,
                           seed=seed + attempt)
        shown = [shown_options(q, orders[q.id][attempt]) for q in pending]
        bar = tqdm(total=len(pending), desc=f"CoT database, attempt {attempt + 1}/{attempts}",
                   disable=not progress, leave=False)
        texts = gen.chat([cot_messages(q, (), s) for q, s in zip(pending, shown, strict=True)], params,
                         on_done=lambda idx, _t: bar.update(len(idx)))
        bar.close()
        tried += len(pending)
        still = []
        for q, options, text in zip(pending, shown, texts, strict=True):
            order = orders[q.id][attempt]
            letter = extract_answer(text, options)
            if to_original(order, letter) != q.answer:
                still.append(q)
                continue
            verified[q.id] = {"id": q.id, "source": q.source, "question": q.question, "context": q.context,
                              "options": options, "answer": letter, "gold": q.answer, "order": order,
                              "cot": text, "attempt": attempt, "model": identity, "key": questions_fingerprint([q])}
        by_attempt.append(len(pending) - len(still))
        pending = still
    rows = [verified[q.id] for q in pool if q.id in verified]
    # The meta marks the database finished: an old one never vouches for the new rows, even if the
    # process dies between the two writes.
    meta_path(out).unlink(missing_ok=True)
    write_jsonl(out, rows)
    meta = expected | {"counts": {"pool": len(pool), "verified": len(rows), "tried": tried,
                                  "verified_by_attempt": by_attempt}}
    write_json(meta_path(out), meta)
    return meta


def _reasoning(cot: str) -> str | None:
    """The chain without a closing answer-only line (the worked example re-adds it canonically)."""
    lines = cot.strip().splitlines()
    if lines and _ANSWER_LINE.fullmatch(lines[-1].strip()):
        lines = lines[:-1]
    return "\n".join(lines).strip() or None


def load_examples(db: str | Path, pool: Sequence[MCQ], model: str, k: int) -> list[MCQ]:
    """The database's verified chains of thought on `pool`, as worked examples for kNN few-shot.

    Each example is the question with its options as the model saw them while writing the chain,
    its answer under that order, and the chain as its explanation. A database built by another
    model, or on questions that are not this pool's, is refused; so is one with fewer than `k`.
    """
    db = require_file(db, "CoT database")
    meta = read_json(require_file(meta_path(db), f"meta of CoT database {db} (is the build finished?)"))
    if meta.get("model") != model:
        raise ValueError(f"CoT database {db} was built by model {meta.get('model')!r}, but this run's model is "
                         f"{model!r}: medprompt's examples must be the model's own chains of thought; "
                         f"rebuild it with `aloe infer build-cot-db --model ...`")
    sources = sorted({p.source for p in pool})
    keys = {p.id: questions_fingerprint([p]) for p in pool}
    rows = [row for _, row in iter_jsonl(db)]
    mine = [r for r in rows if r.get("source") in sources]
    foreign = [r for r in mine if keys.get(r.get("id")) != r.get("key")]
    built = meta.get("pool", {})
    if foreign or not set(built.get("sources", [])) & set(sources):
        what = ("the database has no question from them" if not foreign else
                f"{len(foreign)} of its {len(mine)} examples are not this pool's questions "
                f"(first: {foreign[0].get('id')!r}, {'absent' if foreign[0].get('id') not in keys else 'changed'})")
        raise ValueError(f"CoT database {db} was built on another few-shot pool ({built.get('size')} questions of "
                         f"{built.get('sources')}, fingerprint {built.get('fingerprint')}); this run's pool has "
                         f"{len(pool)} questions of {sources}, and {what}")
    if len(mine) < k:
        counts = meta.get("counts", {})
        raise ValueError(f"CoT database {db} has {len(mine)} verified chains of thought for {sources} "
                         f"({counts.get('tried')} tried on {counts.get('pool')} pool questions), fewer than the "
                         f"{k} kNN shots asked: build it on a larger pool or with more attempts, or lower k_shots")
    return [MCQ(id=r["id"], question=r["question"], options=r["options"], answer=r["answer"], source=r["source"],
                context=r.get("context"), explanation=_reasoning(r["cot"])) for r in mine]
