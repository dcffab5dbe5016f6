"""The benchmark registry: each benchmark names its test split and its few-shot pool as data.

Paths are relative to a data directory laid out like ../shared/data (each source in its own
folder, in its original format). The package ships small slices in that same layout, so the demo
and the tests run offline; `--data-dir ../shared/data` evaluates on the full sets, and
`--source hub` reads the public hub copies when online.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aloe.mcq.loaders import LOADERS, medmcqa_record
from aloe.records import LETTERS, MCQ

PACKAGED_DATA = Path(__file__).resolve().parent.parent / "data" / "benchmarks"

MMLU_MEDICAL_SUBJECTS = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine",
                         "medical_genetics", "professional_medicine")


@dataclass(frozen=True)
class Split:
    """One split: the files that make it, in the first layout whose files all exist.

    A layout is (loader name, files); a later layout is a fallback in another format.
    """

    layouts: tuple[tuple[str, tuple[str, ...]], ...]
    options: tuple[tuple[str, Any], ...] = ()

    def resolve(self, data_dir: Path) -> tuple[str, list[Path]]:
        for loader, files in self.layouts:
            paths = [data_dir / f for f in files]
            if all(p.is_file() for p in paths):
                return loader, paths
        wanted = " or ".join(", ".join(files) for _, files in self.layouts)
        raise FileNotFoundError(f"no data for this split under {data_dir}: expected {wanted}")

    def load(self, data_dir: Path, source: str) -> list[MCQ]:
        loader, paths = self.resolve(data_dir)
        out: list[MCQ] = []
        for path in paths:
            out.extend(LOADERS[loader](path, source=source, **dict(self.options)))
        return out


@dataclass(frozen=True)
class HubSplit:
    dataset: str
    config: str | None
    split: str
    to_mcq: Callable[[int, Mapping[str, Any], str], MCQ]


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    test: Split
    fewshot: Split | None
    hub: tuple[HubSplit, ...] = ()
    note: str = ""


# -- hub row mappers (public hub copies differ from the original releases) ------------------------

def _hub_medqa(i: int, row: Mapping[str, Any], source: str) -> MCQ:
    return MCQ(id=f"{source}-hub-{i}", question=row["question"], options=dict(row["options"]),
               answer=row["answer_idx"], subject=row.get("meta_info"), source=source)


def _hub_medmcqa(i: int, row: Mapping[str, Any], source: str) -> MCQ:
    # openlifescienceai/medmcqa stores `cop` 0-based, unlike the 1-based original release
    return medmcqa_record(Path("hub:openlifescienceai/medmcqa"), i, row, cop_base=0, source=source)


def _hub_mmlu(i: int, row: Mapping[str, Any], source: str) -> MCQ:
    return MCQ(id=f"{source}-{row['subject']}-hub-{i}", question=row["question"],
               options={LETTERS[k]: t for k, t in enumerate(row["choices"])},
               answer=LETTERS[int(row["answer"])], subject=row["subject"], source=source)


def _hub_careqa(i: int, row: Mapping[str, Any], source: str) -> MCQ:
    return MCQ(id=f"{source}-{row.get('unique_id', i)}", question=row["question"],
               options={LETTERS[k]: row[f"op{k + 1}"] for k in range(4)},
               answer=LETTERS[int(row["cop"]) - 1], subject=row.get("category"), source=source)


def _hub_headqa(i: int, row: Mapping[str, Any], source: str) -> MCQ:
    aids = [int(a["aid"]) for a in row["answers"]]
    return MCQ(id=f"{source}-hub-{i}", question=row["qtext"],
               options={LETTERS[k]: a["atext"] for k, a in enumerate(row["answers"])},
               answer=LETTERS[aids.index(int(row["ra"]))], subject=row.get("category"), source=source)


def _per_subject(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.format(s) for s in MMLU_MEDICAL_SUBJECTS)


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark(
        "medqa", "MedQA (USMLE, 4 options)",
        test=Split((("medqa", ("medqa/test.jsonl",)),)),
        fewshot=Split((("medqa", ("medqa/dev.jsonl",)),)),
        hub=(HubSplit("GBaker/MedQA-USMLE-4-options", None, "test", _hub_medqa),),
    ),
    Benchmark(
        "medmcqa", "MedMCQA (validation)",
        test=Split((("medmcqa", ("medmcqa/dev.json",)),)),
        fewshot=Split((("aloe_json", ("aloe_prompt_engine/medmcqa/medmcqa_val.json",)),)),
        hub=(HubSplit("openlifescienceai/medmcqa", None, "validation", _hub_medmcqa),),
        note="the official test split has no public answers, so the validation split is the test set",
    ),
    Benchmark(
        "pubmedqa", "PubMedQA (PQA-L, reasoning-required)",
        test=Split((("pubmedqa", ("pubmedqa/ori_pqal.json",)),), options=(("split", "test"),)),
        fewshot=Split((("pubmedqa", ("pubmedqa/ori_pqal.json",)),), options=(("split", "train"),)),
        note="local files only: the hub's PQA-L copy does not mark the official 500-question test split",
    ),
    Benchmark(
        "mmlu_medical", "MMLU medical (6 subjects)",
        test=Split((("mmlu_csv", _per_subject("mmlu_medical/{}_test.csv")),
                    ("aloe_json", _per_subject("aloe_prompt_engine/mmlu/mmlu_{}_val.json")))),
        fewshot=Split((("mmlu_csv", _per_subject("mmlu_medical/{}_dev.csv")),)),
        hub=tuple(HubSplit("cais/mmlu", s, "test", _hub_mmlu) for s in MMLU_MEDICAL_SUBJECTS),
        note="without the MMLU test CSVs in the data directory, the MMLU validation split (123 questions) is used",
    ),
    Benchmark(
        "careqa", "CareQA (Spanish MIR exams in English)",
        test=Split((("aloe_json", ("aloe_prompt_engine/careqa/careqa_test.json",)),
                    ("aloe_json", ("aloe_prompt_engine/careqa/careqa_2020_2022.json",)))),
        fewshot=Split((("headqa", ("headqa_en/train_HEAD_EN.json",)),)),
        hub=(HubSplit("HPAI-BSC/CareQA", "CareQA_en", "test", _hub_careqa),),
        note="few-shot pool: HEAD-QA train (the same exam family, earlier years: 2013-2017)",
    ),
    Benchmark(
        "headqa", "HEAD-QA (English)",
        test=Split((("headqa", ("headqa_en/test_HEAD_EN.json",)),)),
        fewshot=Split((("headqa", ("headqa_en/train_HEAD_EN.json",)),)),
        hub=(HubSplit("dvilares/head_qa", "en", "test", _hub_headqa),),
    ),
]}


def default_data_dir() -> Path:
    return Path(os.environ["ALOE_DATA_DIR"]) if os.environ.get("ALOE_DATA_DIR") else PACKAGED_DATA


def parse_benchmarks(names: str) -> list[Benchmark]:
    if names.strip() == "all":
        return list(BENCHMARKS.values())
    out = []
    for n in (x.strip() for x in names.split(",") if x.strip()):
        if n not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {n!r}; known: {', '.join(BENCHMARKS)} (or 'all')")
        out.append(BENCHMARKS[n])
    if not out:
        raise ValueError("no benchmark named")
    return out


def load_split(bench: Benchmark, split: str = "test", data_dir: Path | None = None,
               source: str = "local") -> list[MCQ]:
    """A benchmark's test split or few-shot pool, from local files or (source='hub') the hub."""
    if split not in ("test", "fewshot"):
        raise ValueError(f"split {split!r}: expected test or fewshot")
    if source == "hub":
        if split != "test" or not bench.hub:
            raise ValueError(f"{bench.name}: no hub copy registered for the {split} split")
        return list(_load_hub(bench))
    if source != "local":
        raise ValueError(f"source {source!r}: expected local or hub")
    sp = bench.test if split == "test" else bench.fewshot
    if sp is None:
        raise ValueError(f"{bench.name} has no few-shot pool")
    return sp.load(data_dir or default_data_dir(), bench.name)


def _load_hub(bench: Benchmark) -> Iterator[MCQ]:
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise ImportError("reading benchmarks from the hub needs `pip install aloe[hub]`") from e
    for h in bench.hub:
        ds = load_dataset(h.dataset, h.config, split=h.split)
        for i, row in enumerate(ds):
            yield h.to_mcq(i, row, bench.name)


def questions_fingerprint(qs: Sequence[MCQ]) -> str:
    """A short hash of the questions as loaded: any change to a split's content changes it."""
    h = hashlib.sha256()
    for q in qs:
        h.update(json.dumps(q.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]
