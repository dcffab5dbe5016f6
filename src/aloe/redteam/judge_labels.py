"""Human-labelled (request, response, safe/unsafe) pairs: what every safety judge is measured on.

The files are those of `shared/data/judge_labels/` (read its SOURCE.md): JailbreakBench's judge
comparison (human majority of three annotators) and XSTest v2 completions (harm label derived from
human refusal labels, with the refusal label kept). A small slice ships in the package for tests
(`aloe/data/redteam/judge_labels/`, with its licence notices); `--data-dir` reads the full files.

A pair's `key` hashes the request and the response, so a judge that was fit on pairs can name them
and `aloe redteam judge-eval` can refuse to score it on them.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from aloe.io import RecordError, iter_jsonl

PACKAGED = Path(__file__).resolve().parent.parent / "data" / "redteam"
LABELS = ("safe", "unsafe")
# XSTest's human refusal labels; everything but full compliance counts as a refusal.
COMPLIANCE = "1_full_compliance"


def pair_key(behavior: str, response: str) -> str:
    return hashlib.sha256(f"{behavior}\x00{response}".encode()).hexdigest()[:20]


def request_key(text: str) -> str:
    return pair_key(text, "")


@dataclass(frozen=True, slots=True)
class LabelledPair:
    id: str
    file: str  # the file's stem: jbb_judge_comparison, xstest_v2_completions
    source: str
    behavior: str  # the request a judge checks the response against
    prompt: str  # what the model was sent (a jailbreak wraps the behaviour)
    response: str
    unsafe: bool
    subset: str
    refusal: bool | None  # the human refusal label, where the file has one (XSTest)
    also_in: str | None  # the id of the same pair in another file (drop it when pooling)
    # The published judges' verdicts on the pair (JailbreakBench: harmbench_cf, gpt4_cf, ...).
    reference: tuple[tuple[str, bool], ...] = ()

    @property
    def key(self) -> str:
        return pair_key(self.behavior, self.response)

    @property
    def subset_group(self) -> str:
        """`unsafe_prompt:contrast_homonyms` -> `unsafe_prompt`: the coarse subset tables show."""
        return self.subset.split(":", 1)[0]


def _text(path: Path, line: int, row: dict, field: str) -> str:
    v = row.get(field)
    if not isinstance(v, str):
        raise RecordError(path, line, field, f"expected a string, got {type(v).__name__}")
    return v


def load_label_file(path: str | Path) -> list[LabelledPair]:
    p = Path(path)
    pairs = []
    for line, row in iter_jsonl(p):
        label = row.get("label")
        if label not in LABELS:
            raise RecordError(p, line, "label", f"expected 'safe' or 'unsafe', got {label!r}")
        orig = row.get("orig") if isinstance(row.get("orig"), dict) else {}
        final = orig.get("final_label")
        pairs.append(LabelledPair(
            id=_text(p, line, row, "id"), file=p.stem, source=_text(p, line, row, "source"),
            behavior=_text(p, line, row, "behavior"), prompt=_text(p, line, row, "prompt"),
            response=_text(p, line, row, "response"), unsafe=label == "unsafe",
            subset=_text(p, line, row, "subset"),
            refusal=None if final is None else final != COMPLIANCE, also_in=row.get("also_in"),
            reference=tuple((k, bool(v)) for k, v in orig.items() if k.endswith("_cf"))))
    if not pairs:
        raise RecordError(p, None, None, "no labelled pairs in the file")
    return pairs


def label_files(data_dir: str | Path | None = None) -> list[Path]:
    """Every `judge_labels/*.jsonl` under the data dir (the packaged slice when None)."""
    root = (Path(data_dir) if data_dir else PACKAGED) / "judge_labels"
    files = sorted(root.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{root}: no judge_labels/*.jsonl (human-labelled pairs) there")
    return files


def load_labels(data_dir: str | Path | None = None) -> dict[str, list[LabelledPair]]:
    """{file stem: pairs} for every label file under the data dir."""
    return {f.stem: load_label_file(f) for f in label_files(data_dir)}


def sample_pairs(pairs: list[LabelledPair], n: int, seed: int = 0) -> list[LabelledPair]:
    """At most n pairs, a seeded random sample in file order (the same n and seed give the same pairs)."""
    if n >= len(pairs):
        return pairs
    keep = set(random.Random(seed).sample(range(len(pairs)), n))
    return [p for i, p in enumerate(pairs) if i in keep]
