"""The typed `curate:` section of a recipe: every key checked, unknown keys rejected by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Group = Literal["medical", "general"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    """One training-side source and its format: a file or a folder of shards (relative to the data
    dir), or a hub dataset (`format: hub`, `dataset: ORG/NAME`), streamed either way."""

    name: str
    format: str
    # a file; the jsonl/parquet/arrow formats also take a folder of shards. For `hub`, the dataset id
    # (filled in from `dataset`), so plans and cards show every source's location the same way.
    path: str = ""
    # hub sources only
    dataset: str | None = None
    config: str | None = None
    split: str | None = None
    group: Group = "medical"
    limit: int | None = Field(None, ge=1)
    # format-specific options, e.g. {split: train} for pubmedqa, {answer_base: 1} for generic MCQs
    options: dict[str, Any] = Field(default_factory=dict)
    # generic formats: which column holds what (messages; prompt/response or question/answer; or
    # question/options/answer, where options may list one column per option, e.g. [opa, opb, opc, opd])
    columns: dict[str, str | list[str]] = Field(default_factory=dict)
    # MCQs of this source may be sent to the CoT teacher
    cot: bool = False

    @model_validator(mode="after")
    def _location(self) -> SourceConfig:
        if self.format == "hub":
            # a dumped config carries `path` == `dataset`; it must validate again unchanged
            if not self.dataset or self.path not in ("", self.dataset):
                raise ValueError(f"source {self.name!r}: format hub needs `dataset: ORG/NAME` (and no other `path`)")
            self.path = self.dataset
        elif not self.path or self.dataset or self.config or self.split:
            raise ValueError(f"source {self.name!r}: format {self.format!r} reads `path`; "
                             "`dataset`, `config` and `split` belong to format hub")
        if any(isinstance(v, list) for k, v in self.columns.items() if k != "options"):
            raise ValueError(f"source {self.name!r}: only `columns.options` may list several columns")
        return self


class CleanConfig(_Strict):
    min_chars: int = Field(2, ge=0)
    max_chars: int = Field(8000, ge=1)
    min_answer_words: int = Field(1, ge=0)
    strip_urls: bool = True
    strip_emails: bool = True


class DedupConfig(_Strict):
    exact: bool = True
    near: bool = True
    ngram: int = Field(3, ge=1)
    num_perm: int = Field(128, ge=8)
    threshold: float = Field(0.7, gt=0, lt=1)
    bands: int | None = Field(None, ge=1, description="None: chosen from threshold like datasketch")
    seed: int = 1
    verify: bool = True
    engine: Literal["local", "ray"] = "local"
    batch_size: int = Field(2048, ge=1)
    # Ray Data: hash-shuffle partitions of the bucket group-by (None: Ray's default)
    ray_partitions: int | None = Field(None, ge=1)


class DecontamConfig(_Strict):
    benchmarks: str = "all"
    ngram: int = Field(13, ge=1)
    # share of a benchmark item's n-grams a training item must contain to count as a copy of it
    min_coverage: float = Field(0.2, gt=0, le=1)
    # short edited copies: benchmark items sharing a `candidate_ngram` are checked word by word
    candidate_ngram: int = Field(6, ge=1)
    min_contained: float = Field(0.85, gt=0, le=1)
    min_question_contained: float = Field(0.7, gt=0, le=1)
    max_candidates: int = Field(5, ge=1)
    # an n-gram shared by more benchmark items than this is boilerplate ("Which of the following ...")
    max_benchmark_df: int = Field(10, ge=1)
    embedding: bool = False
    embedding_threshold: float = Field(0.9, gt=0, le=1)


class TemplatesConfig(_Strict):
    seed: int = 0


class CotConfig(_Strict):
    enabled: bool = True
    teacher: str = "embedded:smollm2-135m-instruct"
    max_items: int = Field(30, ge=0)
    tries: int = Field(4, ge=1)
    temperatures: list[float] = Field(default_factory=lambda: [0.0, 0.7, 0.9, 1.1])
    max_new_tokens: int = Field(384, ge=8)
    min_chain_words: int = Field(20, ge=0)
    seed: int = 0
    # A teacher request that fails after its retries: `fail` stops the stage with the count of items
    # left (answered ones stay cached, so a rerun asks only for the rest); `continue` drops those items
    # and records them in the data card.
    on_teacher_error: Literal["fail", "continue"] = "fail"
    # fewer verified chains than this fails the stage, whatever the teacher errors
    min_verified: int = Field(0, ge=0)
    # HTTP teachers: parallel requests, per-request time-out, retries with exponential backoff
    concurrency: int = Field(8, ge=1)
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)
    backoff: float = Field(0.5, ge=0)
    # in-process teachers: generation batch size
    batch_size: int = Field(8, ge=1)
    cache_dir: str | None = Field(None, description="None: <output dir>/cache")

    @field_validator("temperatures")
    @classmethod
    def _non_empty(cls, v: list[float]) -> list[float]:
        if not v or any(t < 0 for t in v):
            raise ValueError("needs at least one temperature, none negative")
        return v


class MixConfig(_Strict):
    ratios: dict[str, float] = Field(default_factory=lambda: {"medical": 0.6, "cot": 0.2, "general": 0.2})
    total: int | None = Field(None, ge=1, description="None: as many as the scarcest group allows")
    validation_fraction: float = Field(0.05, ge=0, lt=1)
    seed: int = 0
    tokenizer: str | None = "embedded:smollm2-135m-instruct"

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - {"medical", "cot", "general"}
        if unknown:
            raise ValueError(f"unknown groups {sorted(unknown)}; groups are medical, cot, general")
        if any(r < 0 for r in v.values()) or sum(v.values()) <= 0:
            raise ValueError("ratios must be non-negative with a positive sum")
        return v


class CurateConfig(_Strict):
    sources: list[SourceConfig]
    clean: CleanConfig = Field(default_factory=CleanConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)
    templates: TemplatesConfig = Field(default_factory=TemplatesConfig)
    cot: CotConfig = Field(default_factory=CotConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    data_dir: str | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> CurateConfig:
        names = [s.name for s in self.sources]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"sources: names must be unique, repeated: {sorted(dup)}")
        if not names:
            raise ValueError("sources: at least one source is needed")
        return self


def load_curate_config(path: str | Path) -> CurateConfig:
    """The `curate:` section of a recipe YAML; errors name the file and the offending key."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"recipe not found: {p}")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("curate"), dict):
        raise ValueError(f"{p}: no `curate:` section (a mapping) found")
    try:
        return CurateConfig.model_validate(doc["curate"])
    except ValidationError as e:
        problems = "; ".join(f"curate.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ValueError(f"{p}: {problems}") from None
