"""Reading a run directory (docs/run-directory.md) for the report, tolerating any partial run.

A missing file means the stage did not run; an unreadable one is noted in `problems` and treated
as missing, so the report renders after any failure. Only per-case metadata is read from safety
results (style, seen): their prompts and responses are harmful text and never leave the file.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import yaml

from aloe.evaluate.bias.metrics import BiasMetrics
from aloe.evaluate.metrics import EvalMetrics
from aloe.evaluate.openended.metrics import OpenEndedMetrics
from aloe.humaneval.build import RUN_DIR_DB
from aloe.humaneval.results import bradley_terry, summarize_votes
from aloe.humaneval.store import read_votes
from aloe.infer.metrics import StrategyEvalMetrics
from aloe.io import iter_jsonl, read_json
from aloe.redteam.metrics import OverRefusalMetrics, SafetyMetrics
from aloe.run_layout import LABELS, model_dir
from aloe.train.metrics import DPOMetrics, DPOStageMetrics, SFTMetrics

T = TypeVar("T")


# Licences of base models we know; a local base model's own README front matter wins.
KNOWN_LICENSES = {"smollm2": "apache-2.0", "qwen2.5-7b": "apache-2.0", "llama-3.1": "llama3.1",
                  "llama-3": "llama3", "mistral-7b": "apache-2.0"}


@dataclass
class Run:
    root: Path
    manifest: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None
    data_card: dict[str, Any] | None = None
    sft: SFTMetrics | None = None
    align: DPOMetrics | None = None
    evals: dict[str, EvalMetrics] = field(default_factory=dict)  # label -> eval/<label>/zero-shot/metrics.json
    strategies: dict[str, StrategyEvalMetrics] = field(default_factory=dict)  # label -> eval/<label>/strategies/metrics.json
    safety: dict[str, SafetyMetrics] = field(default_factory=dict)
    overrefusal: dict[str, OverRefusalMetrics] = field(default_factory=dict)  # label -> safety/<label>/overrefusal
    redteam_pairs: dict[str, Any] | None = None  # redteam_pairs/stats.json: the stage-2 pairs
    # label -> style -> {"seen": bool, "family": str}, from results.jsonl metadata
    styles: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    openended: dict[str, OpenEndedMetrics] = field(default_factory=dict)  # label -> eval/<label>/openended/metrics.json
    bias: dict[str, BiasMetrics] = field(default_factory=dict)
    human: dict[str, Any] | None = None  # summarize_votes() of humaneval/votes.sqlite, once it holds votes
    problems: list[str] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        """A link from report/index.html to a file of the run."""
        return "../" + quote(path.relative_to(self.root).as_posix())

    def stage(self, name: str) -> dict[str, Any] | None:
        for s in (self.manifest or {}).get("stages", []):
            if isinstance(s, dict) and s.get("name") == name:
                return s
        return None

    def stage_status(self, name: str) -> str | None:
        s = self.stage(name)
        return str(s.get("status")) if s else None

    def base_model(self) -> str | None:
        recipe = self.recipe or {}
        for section in ("sft", "align"):
            if isinstance(recipe.get(section), dict) and recipe[section].get("model"):
                return str(recipe[section]["model"])
        if isinstance(recipe.get("model"), str):
            return recipe["model"]
        return self.evals["base"].model if "base" in self.evals else None

    def total_seconds(self) -> float | None:
        m = self.manifest or {}
        try:
            t0 = dt.datetime.fromisoformat(str(m["started"]))
            t1 = dt.datetime.fromisoformat(str(m["finished"]))
            return (t1 - t0).total_seconds()
        except (KeyError, ValueError, TypeError):
            secs = [s.get("seconds") for s in m.get("stages", []) if isinstance(s, dict)]
            nums = [x for x in secs if isinstance(x, (int, float))]
            return float(sum(nums)) if nums else None

    def final_model_dir(self) -> Path | None:
        final = model_dir(self.root, "aligned")
        return final if final.parent.is_dir() else None


def _labels(folder: Path) -> list[str]:
    found = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return [x for x in LABELS if x in found] + [x for x in found if x not in LABELS]


def load_run(root: str | Path) -> Run:
    run = Run(Path(root).resolve())
    if not run.root.is_dir():
        raise FileNotFoundError(f"run directory not found: {run.root}")

    def load(rel: str) -> Any:
        path = run.root / rel
        if not path.is_file():
            return None
        try:
            obj = yaml.safe_load(path.read_text(encoding="utf-8")) if path.suffix == ".yaml" else read_json(path)
        except (ValueError, OSError, yaml.YAMLError) as e:
            run.problems.append(f"{rel}: unreadable ({e})")
            return None
        if not isinstance(obj, dict):
            run.problems.append(f"{rel}: expected a mapping, got {type(obj).__name__}")
            return None
        return obj

    def typed(rel: str, read: Callable[[Path], T]) -> T | None:
        """A file aloe wrote, read through its type; one of another shape is noted and treated as missing."""
        path = run.root / rel
        if not path.is_file():
            return None
        try:
            return read(path)
        except (ValueError, OSError) as e:
            run.problems.append(f"{rel}: unreadable ({e})")
            return None

    run.manifest, run.recipe = load("manifest.json"), load("recipe.yaml")
    run.data_card, run.sft = load("curate/data_card.json"), typed("sft/metrics.json", SFTMetrics.read)
    run.align = typed("align/metrics.json", DPOMetrics.read)
    if run.align is None and (run.root / "align").is_dir():
        # stages finished before a later one failed still have their own metrics
        stages = [m for p in sorted((run.root / "align").glob("stage*/metrics.json"))
                  if (m := typed(p.relative_to(run.root).as_posix(), DPOStageMetrics.read))]
        run.align = DPOMetrics(stages=stages) if stages else None
    for label in _labels(run.root / "eval"):
        if ev := typed(f"eval/{label}/zero-shot/metrics.json", EvalMetrics.read):
            run.evals[label] = ev
        if st := typed(f"eval/{label}/strategies/metrics.json", StrategyEvalMetrics.read):
            run.strategies[label] = st
        if m := typed(f"eval/{label}/openended/metrics.json", OpenEndedMetrics.read):
            run.openended[label] = m
        if b := typed(f"eval/{label}/bias/metrics.json", BiasMetrics.read):
            run.bias[label] = b
    for label in _labels(run.root / "safety"):
        if s := typed(f"safety/{label}/metrics.json", SafetyMetrics.read):
            run.safety[label] = s
            run.styles[label] = _style_meta(run, run.root / "safety" / label / "results.jsonl")
        if o := typed(f"safety/{label}/overrefusal/metrics.json", OverRefusalMetrics.read):
            run.overrefusal[label] = o
    run.redteam_pairs = load("redteam_pairs/stats.json")
    run.human = _human_votes(run)
    return run


def _human_votes(run: Run) -> dict[str, Any] | None:
    db = run.root / RUN_DIR_DB
    if not db.is_file():
        return None
    try:
        votes = read_votes(db)  # read-only: raters may be voting while the report renders
    except (sqlite3.Error, ValueError, OSError) as e:
        run.problems.append(f"{RUN_DIR_DB.as_posix()}: unreadable ({e})")
        return None
    if not votes:
        return None
    # summarize_votes ranks only 3+ models; the report ranks two as well, so the section reads the same either way
    return summarize_votes(votes) | {"bradley_terry": bradley_terry(votes)}


def _style_meta(run: Run, path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    try:
        for _, row in iter_jsonl(path):
            out.setdefault(str(row.get("style")), {"seen": bool(row.get("seen")), "family": row.get("family")})
    except (ValueError, OSError) as e:
        run.problems.append(f"{path.relative_to(run.root)}: unreadable ({e})")
    return out


def front_matter(readme: Path) -> dict[str, Any]:
    """The YAML front matter of a Hugging Face README, or {}."""
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    try:
        meta = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return {}
    return meta if isinstance(meta, dict) else {}


def base_license(base_model: str | None) -> str:
    if not base_model:
        return "other"
    if lic := front_matter(Path(base_model).expanduser() / "README.md").get("license"):
        return str(lic)
    name = base_model.lower()
    return next((lic for key, lic in KNOWN_LICENSES.items() if key in name), "other")
