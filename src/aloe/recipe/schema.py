"""The typed recipe: one YAML for the whole Aloe recipe, checked key by key before anything runs.

Each stage keeps its own settings model (CurateConfig, SFTSettings, MergeConfig, ...); the recipe
adds only what joins them: the base and general models, the data dir, and which models the
evaluation and safety stages look at. Paths that connect stages (the SFT data, the model each stage
starts from, output folders) are wired by the runner, so a recipe never names them; a section may
still hold them for running that stage alone (`aloe sft recipes/demo.yaml`), and the runner
overrides them and says so in `--dry-run`.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from aloe.curate.config import CurateConfig
from aloe.infer.config import InferConfig
from aloe.merge.merger import MergeConfig, MergeInput
from aloe.models.backends import Engine
from aloe.models.precision import DEVICE_PATTERN
from aloe.models.spec import DEFAULT_MODEL
from aloe.redteam.judges import DEFAULT_JUDGE
from aloe.run_layout import LABELS, Label
from aloe.train.config import AlignSettings, AlignStage, SFTSettings
from aloe.train.preferences import PreferenceSettings

PACKAGED_RECIPES = Path(__file__).resolve().parent.parent / "recipes"
M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StrategiesSection(_Strict):
    """Medprompt-style strategies (aloe.infer) on a few models; zero-shot is their baseline."""

    names: list[str] = Field(default_factory=lambda: ["medprompt"])
    models: list[Label] = Field(default_factory=lambda: ["base", "aligned"])
    benchmarks: str = "medqa"
    limit: int | None = Field(50, ge=1)
    config: InferConfig = Field(default_factory=InferConfig)


class OpenEndedSection(_Strict):
    """Open-ended QA (aloe.evaluate.openended): free-text answers graded by a judge, ROUGE-L, embedding
    similarity and relaxed perplexity, per set and per medical specialty."""

    models: list[Label] = Field(default_factory=lambda: ["base", "aligned"])
    sets: list[str] = Field(default_factory=lambda: ["openmedqa"], min_length=1)  # or jsonl:PATH
    limit: int | None = Field(100, ge=1)  # questions per set
    judge: str | None = None  # any model spec; None: no judged figure, reference metrics only
    specialty_model: str | None = None  # None: the offline keyword classifier
    max_new_tokens: int = Field(128, ge=1)
    judge_max_new_tokens: int = Field(256, ge=8)
    perplexity: bool = True


class BiasSection(_Strict):
    """Counterfactual bias probes (aloe.evaluate.bias): answer flip rates when a patient descriptor changes."""

    models: list[Label] = Field(default_factory=lambda: ["base", "aligned"])
    benchmarks: str = "medqa"
    attributes: list[Literal["sex", "age", "ethnicity", "socioeconomic"]] = Field(
        default_factory=lambda: ["sex", "age", "ethnicity"], min_length=1)
    limit: int | None = Field(100, ge=1)  # questions per benchmark, before skipping unprobeable ones
    target: Literal["letter", "text"] = "text"  # small models answer one letter whatever the question


class EvalSection(_Strict):
    """Close-ended MCQA (log-likelihood, as lm-eval) on each listed model, then the strategies,
    open-ended QA and bias probes on the same loaded model."""

    models: list[Label] = Field(default_factory=lambda: list(LABELS))
    benchmarks: str = "all"
    limit: int | None = Field(100, ge=1)
    limits: dict[Label, int] = Field(default_factory=dict)  # per-model overrides of `limit`
    target: Literal["letter", "text"] = "letter"
    shots: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)
    # None: the run's precision policy (scoring fp32 on a CPU unless `precision: bf16`); a value
    # holds for every model of the eval stages, scoring and generation
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    strategies: StrategiesSection | None = None
    openended: OpenEndedSection | None = None
    bias: BiasSection | None = None

    @model_validator(mode="after")
    def _subsets_of_models(self) -> EvalSection:
        # Open-ended and bias stages reuse the model their label's eval stage loaded, and share its folder.
        for name in ("openended", "bias"):
            sec = getattr(self, name)
            extra = [m for m in (sec.models if sec else []) if m not in self.models]
            if extra:
                raise ValueError(f"{name}.models {extra} are not in eval.models {self.models}")
        return self


class RedteamPairsSection(_Strict):
    n_prompts: int = Field(120, ge=1)
    styles_per_prompt: int | None = Field(2, ge=1, description="None: every training style")
    teacher: str | None = None  # writes refusals where a prompt has no safe response


class OverrefusalSection(_Strict):
    """Refusal rate on benign prompts (aloe.redteam.overrefusal), beside each model's ASR."""

    n_xstest: int = Field(50, ge=1, le=250)  # XSTest safe prompts, spread over its 10 types
    n_medical: int = Field(20, ge=1)  # alarming-but-benign medical questions (60 packaged; more = all)
    max_new_tokens: int | None = Field(None, ge=8, description="None: redteam.max_new_tokens")


class RedteamEvalSection(_Strict):
    models: list[Label] = Field(default_factory=lambda: ["base", "sft", "aligned"])
    n_prompts: int = Field(100, ge=1)
    styles_per_prompt: int | None = Field(2, ge=1, description="None: every style")
    system_prompt: str | None = None
    overrefusal: OverrefusalSection | None = Field(default_factory=OverrefusalSection)  # None: not measured


class RedteamSection(_Strict):
    """One prompt and style split for the stage-2 pairs (train half) and the safety eval (test half)."""

    sources: list[str] | None = None  # None: every general source plus MedSafetyBench
    seed: int = 0
    prompt_test_fraction: float = Field(0.5, gt=0, lt=1)
    test_families: list[str] | None = None  # style families never trained on; None: drawn by seed
    n_test_families: int = Field(2, ge=0)
    judge: str = DEFAULT_JUDGE
    max_new_tokens: int = Field(64, ge=8)
    batch_size: int = Field(8, ge=1)
    dtype: Literal["float32", "bfloat16", "float16"] | None = None  # None: the run's generation precision
    pairs: RedteamPairsSection = Field(default_factory=RedteamPairsSection)
    eval: RedteamEvalSection = Field(default_factory=RedteamEvalSection)


def _section(settings: type[M], wired: Sequence[str], **fields: Any) -> type[M]:
    """`settings` as a recipe section: the same keys, checked the same way (unknown keys are errors),
    except that the fields the runner wires from earlier stages may be left out. A section may still
    hold them, so that `aloe sft recipe.yaml` runs the stage alone; in a run the runner overrides them
    and `--dry-run` prints what it set."""
    optional: dict[str, Any] = {name: (settings.model_fields[name].annotation | None, None) for name in wired}
    return create_model(f"{settings.__name__}Section", __base__=settings, **optional, **fields)


AlignStageSection = _section(AlignStage, ["data"])
MergeInputSection = _section(MergeInput, ["model"])
SFTSection = _section(SFTSettings, ["model", "data", "eval_data", "output_dir"])
PreferencesSection = _section(PreferenceSettings, ["output", "model", "cache_dir", "safety_data_dir"])
# stage 1: the preference pairs, stage 2: the red-team pairs
AlignSection = _section(AlignSettings, ["model", "output_dir", "refusal_eval"],
                        stages=(list[AlignStageSection], Field(default_factory=lambda: [{}, {}], min_length=2,
                                                               max_length=2)))
MergeSection = _section(MergeConfig, ["base_model"],
                        models=(list[MergeInputSection], Field(default_factory=lambda: [{"density": 0.5}],
                                                               min_length=1, max_length=1)))


def resolve(section: BaseModel | None, section_type: type[BaseModel], wired: dict[str, Any]) -> Any:
    """A stage's settings: the recipe section (its defaults when absent), then what the runner wires
    on top. The stage hash and the stage run both call this, so they can never see different values."""
    data = (section if section is not None else section_type()).model_dump()
    settings = section_type.__mro__[1]  # the stage's own settings class the section was made from
    return _validate(settings, _merge(data, wired), settings.__name__)


def _merge(data: Any, wired: Any) -> Any:
    """Wired values over the section's; lists of sections (align stages, merge models) item by item."""
    if isinstance(data, dict) and isinstance(wired, dict):
        return {**data, **{k: _merge(data.get(k), v) for k, v in wired.items()}}
    if isinstance(wired, list) and isinstance(data, list) and len(data) == len(wired):
        return [_merge(d, w) for d, w in zip(data, wired, strict=True)]
    return wired


def _validate(settings: type[M], data: dict[str, Any], name: str) -> M:
    try:
        return settings.model_validate(data)
    except ValidationError as e:
        raise ValueError(_format_errors(name, e)) from None


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    model: str = DEFAULT_MODEL  # the base model that is fine-tuned
    general_model: str | None = None  # the merge partner; None: the base model itself
    data_dir: str | None = None  # a folder laid out like shared/data; None: the packaged slices
    run_dir: str | None = None  # None: runs/<name>
    # every in-process model of the run (scorers, generators, teachers, judges, embedders, trainers):
    # auto is a CUDA GPU when torch sees one, else mps, else the CPU (aloe.models.precision)
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # per role: aloe.models.precision.resolve_policy
    # under `precision: auto`, log-likelihood scoring's (MCQA, bias probes; open-ended perplexity reuses
    # the generation copy): null is fp32 on a CPU (comparable with lm-eval) and auto elsewhere; auto
    # is bf16 where native, CPUs included
    scoring_precision: Literal["auto", "fp32"] | None = None
    engine: Engine = Field(default_factory=Engine)  # what every generation step runs on
    # SFT's and DPO's checkpoints (weights + optimizer state: 1.6 GB each for the 135M model, ~100 GB
    # for an 8B one) serve only to resume a killed stage, so they are deleted once it is done; true
    # keeps them (to continue training with the optimizer state). Not part of any stage's hash.
    keep_checkpoints: bool = False
    curate: CurateConfig | None = None
    sft: SFTSection | None = None  # type: ignore[valid-type]
    merge: MergeSection | None = None  # type: ignore[valid-type]
    preferences: PreferencesSection | None = None  # type: ignore[valid-type]
    redteam: RedteamSection | None = None
    align: AlignSection | None = None  # type: ignore[valid-type]
    eval: EvalSection | None = None
    report: bool = True


def _format_errors(section: str, e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in (section, *err["loc"]) if x != "")
        if err["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown key (a typo? see the section's settings in docs or --dry-run)")
            continue
        got = f" (got {err['input']!r})" if err["type"] not in ("missing",) and not isinstance(err["input"], dict) else ""
        parts.append(f"{loc}: {err['msg']}{got}")
    return "; ".join(parts)


def resolve_recipe_path(name_or_path: str | None) -> Path:
    """A path, or the name of a packaged recipe (`demo`, `aloe-beta-8b`); None is the demo."""
    if name_or_path is None:
        return PACKAGED_RECIPES / "demo.yaml"
    p = Path(name_or_path)
    if p.is_file():
        return p
    packaged = PACKAGED_RECIPES / f"{name_or_path}.yaml"
    if "/" not in name_or_path and packaged.is_file():
        return packaged
    known = ", ".join(sorted(x.stem for x in PACKAGED_RECIPES.glob("*.yaml")))
    raise FileNotFoundError(f"recipe not found: {name_or_path} (packaged recipes: {known})")


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Parse and validate; every error names the file and the key (`sft.method: Input should be ...`)."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{p}: a recipe is a mapping of sections (name, model, curate, sft, ...)")
    for item in overrides or []:
        _apply_override(doc, item)
    doc.setdefault("name", p.stem)
    try:
        recipe = Recipe.model_validate(doc)
    except ValidationError as e:
        raise ValueError(f"{p}: {_format_errors('', e)}") from None
    return recipe


def _apply_override(doc: dict[str, Any], item: str) -> None:
    """`--set sft.max_steps=5`: VALUE is parsed as YAML; missing mappings are created."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. sft.max_steps=5")
    node = doc
    *parents, last = key.split(".")
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"--set {item!r}: {part} is not a mapping")
        node = child
    node[last] = yaml.safe_load(value)
