"""Pair two `aloe eval-open` runs' answers to the same questions into `aloe human-eval serve` input.

A run is the folder `aloe eval-open --out` wrote (its `metrics.json` names the model and the sets;
each set's answers are in `<set>/predictions.jsonl`), or one set's folder inside it. Questions are
matched by (set, id) and must have the same text in both runs; any question one run has and the
other lacks is an error naming the file and the ids, unless `allow_partial` pairs the shared ones.

A recipe run directory holds one such run per model label (`eval/<label>/openended/`);
`run_dir_runs` finds two of them, and the comparison set and its votes live beside them in
RUN_DIR/humaneval/ (`RUN_DIR_INPUT`, `RUN_DIR_DB`), where the report looks for them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aloe.io import RecordError, iter_jsonl, read_json

SHOWN_IDS = 10  # missing ids listed in an error before "and N more"
RUN_DIR_INPUT = Path("humaneval") / "comparisons.jsonl"
RUN_DIR_DB = Path("humaneval") / "votes.sqlite"


@dataclass(frozen=True)
class Answered:
    question: str
    answer: str
    path: Path  # the predictions file it came from


@dataclass
class Run:
    folder: Path
    model: str
    sets: dict[str, Path]  # set name -> predictions.jsonl
    answers: dict[tuple[str, str], Answered]  # (set, id) -> answer


def _str_field(path: Path, where: Any, row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise RecordError(path, where, key, "expected a string")
    return value


def load_run(folder: str | Path) -> Run:
    folder = Path(folder)
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{folder}: not an `aloe eval-open` output (no metrics.json)")
    metrics = read_json(metrics_path)
    if not isinstance(metrics, dict) or not isinstance(metrics.get("model"), str):
        raise RecordError(metrics_path, None, "model", "expected the model spec the run evaluated")
    if isinstance(metrics.get("sets"), dict):  # a whole run: one sub-folder per set
        sets = {name: folder / name / "predictions.jsonl" for name in metrics["sets"]}
    elif isinstance(metrics.get("set"), str):  # one set's folder
        sets = {metrics["set"]: folder / "predictions.jsonl"}
    else:
        raise RecordError(metrics_path, None, "sets", "expected `sets` (a run folder) or `set` (a set folder)")
    answers: dict[tuple[str, str], Answered] = {}
    for name, path in sets.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; {metrics_path} lists set {name!r}")
        for lineno, row in iter_jsonl(path):
            key = (name, _str_field(path, lineno, row, "id"))
            if key in answers:
                raise RecordError(path, lineno, "id", f"duplicate id {key[1]!r}")
            answers[key] = Answered(_str_field(path, lineno, row, "question"),
                                    _str_field(path, lineno, row, "answer"), path)
    return Run(folder, metrics["model"], sets, answers)


def is_run_dir(path: Path) -> bool:
    """A recipe run directory (its open-ended answers under eval/<label>/openended/), not an eval-open folder."""
    return any((path / "eval").glob("*/openended/metrics.json"))


def run_dir_runs(run_dir: Path, labels: tuple[str, str]) -> tuple[Path, Path]:
    """The `aloe eval-open` folders of two model labels of a run directory."""
    found = sorted(p.parent.parent.name for p in (run_dir / "eval").glob("*/openended/metrics.json"))
    folders = []
    for label in labels:
        folder = run_dir / "eval" / label / "openended"
        if not (folder / "metrics.json").is_file():
            raise FileNotFoundError(f"{folder / 'metrics.json'}: missing, so model {label!r} has no open-ended "
                                    f"answers in {run_dir} (labels with answers: {', '.join(found) or 'none'})")
        folders.append(folder)
    return folders[0], folders[1]


def _ids(keys: list[tuple[str, str]]) -> str:
    shown = ", ".join(i for _, i in keys[:SHOWN_IDS])
    return shown + (f" and {len(keys) - SHOWN_IDS} more" if len(keys) > SHOWN_IDS else "")


def _missing(have: Run, lack: Run) -> list[str]:
    """One line per set of `have` whose questions `lack` does not hold."""
    problems = []
    for name in have.sets:
        keys = sorted(k for k in have.answers if k[0] == name and k not in lack.answers)
        if not keys:
            continue
        if name not in lack.sets:
            problems.append(f"{lack.folder / 'metrics.json'} has no set {name!r} ({len(keys)} questions in "
                            f"{have.sets[name]})")
        else:
            problems.append(f"{lack.sets[name]} lacks {len(keys)} id(s) that {have.sets[name]} has: {_ids(keys)}")
    return problems


def build_comparisons(run_a: str | Path, run_b: str | Path, n: int | None = None, seed: int = 0,
                      names: tuple[str, str] | None = None,
                      allow_partial: bool = False) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(serve-input rows, counts) for the questions both runs answered; `n` samples that many."""
    a, b = load_run(run_a), load_run(run_b)
    name_a, name_b = names or (a.model, b.model)
    if name_a == name_b:
        raise ValueError(f"both runs are named {name_a!r} ({a.folder}, {b.folder}); "
                         "give them distinct names (--names NAME_A,NAME_B)")
    problems = _missing(a, b) + _missing(b, a)
    shared = sorted(a.answers.keys() & b.answers.keys())
    if problems and (not allow_partial or not shared):
        hint = (f"; --allow-partial pairs the {len(shared)} shared ones" if shared else " (no question in common)")
        raise ValueError(f"the runs do not answer the same questions{hint}:\n  " + "\n  ".join(problems))
    rows, empty = [], 0
    for key in shared:
        qa, qb = a.answers[key], b.answers[key]
        if qa.question != qb.question:
            raise ValueError(f"question {key[1]!r} of set {key[0]!r} differs between {qa.path} and {qb.path}; "
                             "the runs evaluated different data")
        if not qa.answer.strip() or not qb.answer.strip():
            empty += 1  # nothing to show a rater; serve refuses empty answers
            continue
        rows.append({"id": f"{key[0]}/{key[1]}", "question": qa.question,
                     "answers": {name_a: qa.answer, name_b: qb.answer}})
    if n is not None:
        if n < 1:
            raise ValueError("n must be at least 1")
        keep = set(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
        rows = [r for i, r in enumerate(rows) if i in keep]
    counts = {"shared": len(shared), "empty_answer_skipped": empty, "written": len(rows),
              "only_in_a": len(a.answers.keys() - b.answers.keys()),
              "only_in_b": len(b.answers.keys() - a.answers.keys())}
    return rows, counts
