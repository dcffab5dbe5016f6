"""Harmful-prompt sets, each mapped once into `HarmfulPrompt`.

A data dir is laid out like /work/shared/data (one folder per source, upstream file names); the
default is the small slice shipped in `aloe/data/redteam`. Every loader names the file, line and
field of a bad record. Prompt texts are harmful by design: nothing here logs them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aloe.io import RecordError, csv_rows, iter_jsonl, nonempty_text, require_file

PACKAGED_DATA = Path(__file__).resolve().parent.parent / "data" / "redteam"

# MedSafetyBench categories follow the nine AMA Principles of Medical Ethics (paper, Table 1).
MEDSAFETY_CATEGORIES = {
    1: "competence_compassion_dignity", 2: "professionalism_honesty", 3: "law_and_patient_interest",
    4: "patient_rights_confidentiality", 5: "continued_study_information", 6: "physician_freedom_of_choice",
    7: "community_and_public_health", 8: "responsibility_to_patient", 9: "medical_care_for_all",
}


@dataclass(frozen=True, slots=True)
class HarmfulPrompt:
    id: str
    prompt: str
    source: str
    category: str
    safe_response: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HarmfulPrompt:
        return cls(id=str(d["id"]), prompt=d["prompt"], source=d["source"], category=d["category"],
                   safe_response=d.get("safe_response"))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def load_advbench(root: Path) -> list[HarmfulPrompt]:
    path = root / "advbench" / "harmful_behaviors.csv"
    return [HarmfulPrompt(f"advbench-{i}", nonempty_text(path, line, "goal", row.get("goal")), "advbench", "harmful_behavior")
            for i, (line, row) in enumerate(csv_rows(path, ["goal"]))]


def load_harmbench(root: Path) -> list[HarmfulPrompt]:
    """Standard and contextual behaviours; copyright ones need HarmBench's hash classifier, so
    they are skipped. A contextual behaviour is shown after its context, as HarmBench does."""
    path = root / "harmbench" / "harmbench_behaviors_text_all.csv"
    out = []
    for line, row in csv_rows(path, ["Behavior", "FunctionalCategory", "SemanticCategory", "BehaviorID"]):
        functional = nonempty_text(path, line, "FunctionalCategory", row["FunctionalCategory"])
        if functional == "copyright":
            continue
        behavior = nonempty_text(path, line, "Behavior", row["Behavior"])
        context = (row.get("ContextString") or "").strip()
        if functional == "contextual":
            if not context:
                raise RecordError(path, line, "ContextString", "contextual behaviour without a context")
            behavior = f"{context}\n\n---\n\n{behavior}"
        out.append(HarmfulPrompt(f"harmbench-{nonempty_text(path, line, 'BehaviorID', row['BehaviorID'])}", behavior,
                                 "harmbench", nonempty_text(path, line, "SemanticCategory", row["SemanticCategory"])))
    return out


def load_strongreject(root: Path) -> list[HarmfulPrompt]:
    path = root / "harmbench" / "strongreject_dataset.csv"
    return [HarmfulPrompt(f"strongreject-{i}", nonempty_text(path, line, "forbidden_prompt", row["forbidden_prompt"]),
                          "strongreject", _slug(nonempty_text(path, line, "category", row["category"])))
            for i, (line, row) in enumerate(csv_rows(path, ["category", "forbidden_prompt"]))]


def load_malicious_instruct(root: Path) -> list[HarmfulPrompt]:
    path = require_file(root / "harmbench" / "malicious_instruct.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [HarmfulPrompt(f"maliciousinstruct-{n}", line.strip(), "malicious_instruct", "malicious_instruct")
            for n, line in enumerate(lines, 1) if line.strip()]


def load_do_not_answer(root: Path) -> list[HarmfulPrompt]:
    path = root / "do_not_answer" / "do_not_answer_en.jsonl"
    return [HarmfulPrompt(f"donotanswer-{obj.get('id', line)}", nonempty_text(path, line, "question", obj.get("question")),
                          "do_not_answer", _slug(nonempty_text(path, line, "risk_area", obj.get("risk_area"))))
            for line, obj in iter_jsonl(path)]


def load_medsafetybench(root: Path, split: str = "test") -> list[HarmfulPrompt]:
    """MedSafety-Eval (test) or -Improve (train): harmful medical requests with GPT-4/Llama-2 safe
    responses, which become the chosen side of red-team DPO pairs."""
    base = root / "medsafetybench" / split
    files = sorted(base.glob("*/med_safety_demonstrations_category_*.csv"))
    if not files:
        raise FileNotFoundError(f"no MedSafetyBench CSVs under {base}/<generator>/")
    out = []
    for path in files:
        k = int(re.search(r"category_(\d+)", path.name).group(1))  # type: ignore[union-attr]
        gen = path.parent.name
        for i, (line, row) in enumerate(csv_rows(path, ["harmful_medical_request", "safe_response"])):
            out.append(HarmfulPrompt(
                f"medsafetybench-{split}-{gen}-c{k}-{i}", nonempty_text(path, line, "harmful_medical_request",
                                                                row["harmful_medical_request"]),
                "medsafetybench", MEDSAFETY_CATEGORIES.get(k, f"category_{k}"),
                nonempty_text(path, line, "safe_response", row["safe_response"])))
    return out


LOADERS: dict[str, Callable[[Path], list[HarmfulPrompt]]] = {
    "advbench": load_advbench,
    "harmbench": load_harmbench,
    "strongreject": load_strongreject,
    "malicious_instruct": load_malicious_instruct,
    "do_not_answer": load_do_not_answer,
    "medsafetybench": load_medsafetybench,
    "medsafetybench_train": lambda root: load_medsafetybench(root, "train"),
}


def load_prompts(sources: Iterable[str] | None = None, data_dir: str | Path | None = None) -> list[HarmfulPrompt]:
    root = Path(data_dir) if data_dir else PACKAGED_DATA
    names = list(sources) if sources else [s for s in LOADERS if s != "medsafetybench_train"]
    unknown = [s for s in names if s not in LOADERS]
    if unknown:
        raise ValueError(f"unknown prompt source(s) {unknown}; known: {sorted(LOADERS)}")
    return [p for s in names for p in LOADERS[s](root)]


def load_prompts_jsonl(path: str | Path) -> list[HarmfulPrompt]:
    """Prompts in aloe's own format (one `HarmfulPrompt.to_dict()` per line)."""
    out = []
    for line, obj in iter_jsonl(path):
        for field in ("id", "prompt", "source", "category"):
            nonempty_text(Path(path), line, field, obj.get(field) if field != "id" else str(obj.get("id") or ""))
        out.append(HarmfulPrompt.from_dict(obj))
    return out


def _bucket(key: str, seed: int) -> float:
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / 16 ** 12


def split_prompts(prompts: Sequence[HarmfulPrompt], test_fraction: float = 0.5,
                  seed: int = 0) -> tuple[list[HarmfulPrompt], list[HarmfulPrompt]]:
    """(train, test) by a seeded hash of each id: stable when prompts are added or reordered."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    train = [p for p in prompts if _bucket(p.id, seed) >= test_fraction]
    test = [p for p in prompts if _bucket(p.id, seed) < test_fraction]
    return train, test


def sample_per_source(prompts: Sequence[HarmfulPrompt], n: int, seed: int = 0) -> list[HarmfulPrompt]:
    """Up to `n` prompts spread evenly over sources (round robin in seeded-hash order)."""
    by_source: dict[str, list[HarmfulPrompt]] = {}
    for p in sorted(prompts, key=lambda p: _bucket(p.id, seed + 1)):
        by_source.setdefault(p.source, []).append(p)
    out: list[HarmfulPrompt] = []
    queues = list(by_source.values())
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out
