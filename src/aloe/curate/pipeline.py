"""The curate stage: `curate(config, out_dir) -> artifacts`, sources to a mixed dataset and its card.

Steps run in order over all items: clean -> exact dedup -> near dedup -> decontaminate -> CoT
synthesis -> templates -> mix; each counts, per source, what came in, what it dropped (by rule),
changed or added, and what went out, and the card checks that one step's output is the next one's
input. The dataset folder holds train.jsonl and validation.jsonl of Conversation records, which
`datasets.load_dataset("json", data_dir=...)` (or `load_dataset(folder)`) reads as two splits.

When CoT synthesis falls short of its policy (teacher errors under `cot.on_teacher_error: fail`, or
fewer chains than `cot.min_verified`) the stage raises and writes no dataset; the chains verified so
far go to cot_partial.jsonl, and every teacher answer is in the completion cache for the rerun.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from aloe.curate.clean import Clean
from aloe.curate.config import CurateConfig
from aloe.curate.cot import CotFailed, SynthesiseCoT
from aloe.curate.decontam import Decontaminate
from aloe.curate.dedup import ExactDedup, NearDedup
from aloe.curate.items import Item, Step
from aloe.curate.mix import Mix, count_by, split, to_conversation, token_stats
from aloe.curate.sources import load_source
from aloe.curate.templates import Templates
from aloe.io import write_json, write_jsonl, write_text

log = logging.getLogger(__name__)


def load_all(cfg: CurateConfig, data_dir: Path | None) -> tuple[list[Item], dict[str, int]]:
    items: list[Item] = []
    counts: dict[str, int] = {}
    for src in tqdm(cfg.sources, desc="sources", leave=False):
        got = load_source(src, data_dir)
        counts[src.name] = len(got)
        items += got
    return items, counts


def curate(cfg: CurateConfig, out_dir: str | Path, data_dir: str | Path | None = None) -> dict[str, Path]:
    """Run the whole stage; returns the artifact paths (dataset folder, card, reports)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ddir = Path(data_dir) if data_dir else (Path(cfg.data_dir) if cfg.data_dir else None)
    t0 = time.perf_counter()
    items, loaded = load_all(cfg, ddir)
    steps: list[Step] = [Clean(cfg.clean)]
    dedups = ([ExactDedup()] if cfg.dedup.exact else []) + ([NearDedup(cfg.dedup)] if cfg.dedup.near else [])
    steps += dedups
    decontam = Decontaminate(cfg.decontam, ddir)
    cot = SynthesiseCoT(cfg.cot, Path(cfg.cot.cache_dir) if cfg.cot.cache_dir else out / "cache")
    mix = Mix(cfg.mix)
    steps += [decontam, cot, Templates(cfg.templates), mix]
    timings = {}
    partial = out / "cot_partial.jsonl"
    for step in steps:
        t = time.perf_counter()
        try:
            items = step(items)
        except CotFailed as e:
            write_jsonl(partial, (i.to_dict() for i in cot.verified))
            e.add_note(f"the {len(cot.verified)} chains verified so far: {partial}")
            raise
        timings[step.name] = round(time.perf_counter() - t, 2)
        log.info("%s: %d items", step.name, len(items))
    partial.unlink(missing_ok=True)  # a resumed run that got through supersedes it
    convs = [to_conversation(i) for i in items]
    train, val = split(items, cfg.mix.validation_fraction, cfg.mix.seed)
    ds_dir = out / "dataset"
    write_jsonl(ds_dir / "train.jsonl", (to_conversation(i).to_dict() for i in train))
    write_jsonl(ds_dir / "validation.jsonl", (to_conversation(i).to_dict() for i in val))
    write_jsonl(out / "decontamination_report.jsonl", decontam.report)
    write_jsonl(out / "duplicates.jsonl", ({"step": d.name, **r} for d in dedups for r in d.removed))

    card = {
        "sources": {s.name: {"format": s.format, "path": s.path, "group": s.group, "loaded": loaded[s.name]}
                    for s in cfg.sources},
        "data_dir": str(ddir) if ddir else "packaged slices",
        "steps": [{"step": s.name, "seconds": timings[s.name], **s.stats.to_dict()} for s in steps],
        "mix": mix.plan,
        "splits": {"train": len(train), "validation": len(val)},
        "by_group": count_by(convs, "group"),
        "by_task": count_by(convs, "task"),
        "by_source": count_by(convs, "source"),
        "cot": cot.summary,
        "decontamination": {"benchmarks": sorted({b for b, _ in decontam.index.items}),
                            "benchmark_items": len(decontam.index.items), "ngram": cfg.decontam.ngram,
                            "min_coverage": cfg.decontam.min_coverage, "removed": decontam.report},
        "tokens": _token_stats(convs, cfg.mix.tokenizer),
        "seconds": round(time.perf_counter() - t0, 1),
        "config": cfg.model_dump(),
    }
    card["checks"] = check_counts(card)
    write_json(out / "data_card.json", card)
    write_text(out / "data_card.md", render_card(card))
    return {"dataset": ds_dir, "data_card": out / "data_card.json", "data_card_md": out / "data_card.md",
            "decontamination_report": out / "decontamination_report.jsonl", "duplicates": out / "duplicates.jsonl"}


def _token_stats(convs: list[Any], spec: str | None) -> dict[str, Any]:
    if not spec or not convs:
        return {}
    from transformers import AutoTokenizer

    from aloe.models.loading import resolve_weights

    tok = AutoTokenizer.from_pretrained(resolve_weights(spec))
    return {"tokenizer": spec, **token_stats(convs, tok)}


def check_counts(card: dict[str, Any]) -> dict[str, Any]:
    """Every step balances per source, each step's input is the previous output, the end is the dataset."""
    loaded = Counter({k: v["loaded"] for k, v in card["sources"].items()})
    prev = loaded
    for s in card["steps"]:
        if Counter(s["in"]) != +prev:
            raise AssertionError(f"step {s['step']}: input {dict(s['in'])} is not the previous output {dict(prev)}")
        for src in set(s["in"]) | set(s["out"]) | set(s["added"]):
            dropped = sum(d.get(src, 0) for d in s["dropped"].values())
            if s["in"].get(src, 0) + s["added"].get(src, 0) - dropped != s["out"].get(src, 0):
                raise AssertionError(f"step {s['step']}, source {src}: counts do not add up")
        prev = Counter(s["out"])
    final = sum(prev.values())
    if final != card["splits"]["train"] + card["splits"]["validation"]:
        raise AssertionError(f"mix output {final} != train + validation")
    return {"loaded": sum(loaded.values()), "final": final, "balanced": True}


def _table(rows: list[list[Any]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_card(card: dict[str, Any]) -> str:
    sources = list(card["sources"])
    md = ["# Data card", "",
          f"{card['splits']['train']} training and {card['splits']['validation']} validation conversations "
          f"from {len(sources)} sources ({card['data_dir']}); built in {card['seconds']} s.", "",
          "## Counts per step and source (in -> out)", ""]
    rows = []
    for s in card["steps"]:
        for src in sources:
            if s["in"].get(src) or s["out"].get(src) or s["added"].get(src):
                why = ", ".join(f"{r} {c[src]}" for r, c in s["dropped"].items() if c.get(src))
                chg = ", ".join(f"{r} {c[src]}" for r, c in s["changed"].items() if c.get(src))
                rows.append([s["step"], src, s["in"].get(src, 0), s["added"].get(src, 0) or "", s["out"].get(src, 0),
                             why, chg])
    md += [_table(rows, ["step", "source", "in", "added", "out", "dropped", "changed"]), ""]
    md += ["## Mix", "", _table([[g, v["available"], v["target"], v["taken"], v["target_share"], v["actual_share"]]
                                 for g, v in card["mix"]["groups"].items()],
                                ["group", "available", "target", "taken", "target share", "actual share"]), ""]
    md += ["## Tasks", "", _table([[k, v] for k, v in sorted(card["by_task"].items())], ["task", "conversations"]), ""]
    cot = card["cot"]
    md += ["## Chain-of-thought synthesis", "",
           f"teacher `{cot.get('teacher', '-')}`: {cot.get('verified', 0)} of {cot.get('attempted', 0)} MCQs got a "
           f"chain whose final answer matches gold (by try: {json.dumps(cot.get('verified_at_try', {}))}); "
           f"dropped: {cot.get('never_matched', 0)} that never did, {cot.get('failed', 0)} with no answer from the "
           f"teacher ({cot.get('answered', 0)} of {cot.get('requests', 0)} requests answered). Policy: "
           f"on_teacher_error `{cot['on_teacher_error']}`, min_verified {cot['min_verified']}."
           + (f" Teacher error: {cot['error']}" if cot.get("error") else ""), ""]
    if card["tokens"]:
        tk = card["tokens"]
        md += [f"## Tokens ({tk['tokenizer']}, chat template applied)", "",
               _table([[g, v["conversations"], v["tokens"], v["mean"], v["median"], v["p95"], v["max"]]
                       for g, v in tk.items() if isinstance(v, dict)],
                      ["group", "conversations", "tokens", "mean", "median", "p95", "max"]), ""]
    dc = card["decontamination"]
    md += ["## Decontamination", "",
           f"{len(dc['removed'])} items removed: overlap with the test splits of {', '.join(dc['benchmarks'])} "
           f"({dc['benchmark_items']} items; {dc['ngram']}-gram, coverage >= {dc['min_coverage']}).", ""]
    if dc["removed"]:
        md.append(_table([[r["id"], r["source"], r["benchmark"], r["benchmark_id"], r["method"],
                           r.get("coverage", r.get("cosine")), r["benchmark_text"].replace("|", "/")]
                          for r in dc["removed"]],
                         ["removed item", "source", "benchmark", "benchmark item", "method", "score",
                          "benchmark question"]))
    return "\n".join(md) + "\n"
