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
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aloe.curate.config import CurateConfig
from aloe.infer.config import InferConfig
from aloe.merge.merger import MergeConfig
from aloe.models.spec import DEFAULT_MODEL
from aloe.redteam.judges import DEFAULT_JUDGE
from aloe.train.config import AlignSettings, AlignStage, SFTSettings
from aloe.train.preferences import PreferenceSettings

Label = Literal["base", "sft", "merged", "aligned"]
PACKAGED_RECIPES = Path(__file__).resolve().parent.parent / "recipes"


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

    models: list[Label] = Field(default_factory=lambda: ["base", "sft", "merged", "aligned"])
    benchmarks: str = "all"
    limit: int | None = Field(100, ge=1)
    limits: dict[Label, int] = Field(default_factory=dict)  # per-model overrides of `limit`
    target: Literal["letter", "text"] = "letter"
    shots: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
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
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    pairs: RedteamPairsSection = Field(default_factory=RedteamPairsSection)
    eval: RedteamEvalSection = Field(default_factory=RedteamEvalSection)


# Fields of a stage's own settings that the runner wires from earlier stages: ignored in a recipe.
# (merge: base_model and models[0].model, set in `merge_config`.)
WIRED: dict[str, set[str]] = {
    "sft": {"model", "data", "eval_data", "output_dir"},
    "preferences": {"output", "model", "cache_dir", "safety_data_dir"},
    "align": {"model", "output_dir", "refusal_eval"},
}
PLACEHOLDER = "<wired by the runner>"


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    model: str = DEFAULT_MODEL  # the base model that is fine-tuned
    general_model: str | None = None  # the merge partner; None: the base model itself
    data_dir: str | None = None  # a folder laid out like shared/data; None: the packaged slices
    run_dir: str | None = None  # None: runs/<name>
    curate: CurateConfig | None = None
    sft: dict[str, Any] | None = None
    merge: dict[str, Any] | None = None
    preferences: dict[str, Any] | None = None
    redteam: RedteamSection | None = None
    align: dict[str, Any] | None = None
    eval: EvalSection | None = None
    report: bool = True

    def sft_settings(self, **wired: Any) -> SFTSettings:
        return _section(SFTSettings, "sft", self.sft, wired)

    def preference_settings(self, **wired: Any) -> PreferenceSettings:
        return _section(PreferenceSettings, "preferences", self.preferences, wired)

    def align_settings(self, stage_data: list[str], **wired: Any) -> AlignSettings:
        sec = dict(self.align or {})
        stages = [dict(st) for st in sec.get("stages") or [{}, {}]]
        if len(stages) != len(stage_data):
            raise ValueError(f"align.stages: the recipe runs {len(stage_data)} DPO stages "
                             f"(stage 1: preferences, stage 2: red-team pairs), got {len(stages)}")
        for st, data in zip(stages, stage_data, strict=True):
            st["data"] = data
        return _section(AlignSettings, "align", {**sec, "stages": stages}, wired)

    def merge_config(self, sft_model: str, general_model: str) -> MergeConfig:
        """The SFT model (first entry of `models`, weight and density from the recipe) into the general one."""
        sec = dict(self.merge or {})
        models = [dict(m) for m in sec.get("models") or [{"weight": 1.0, "density": 0.5}]]
        if len(models) != 1:
            raise ValueError(f"merge.models: the recipe merges one model (the SFT model), got {len(models)}")
        models[0]["model"] = sft_model
        return _section(MergeConfig, "merge", {**sec, "models": models}, {"base_model": general_model})


def _format_errors(section: str, e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in (section, *err["loc"]) if x != "")
        got = f" (got {err['input']!r})" if err["type"] not in ("missing",) and not isinstance(err["input"], dict) else ""
        parts.append(f"{loc}: {err['msg']}{got}")
    return "; ".join(parts)


def _section(model: type[BaseModel], name: str, data: dict[str, Any] | None, wired: dict[str, Any]) -> Any:
    data = dict(data or {})
    known = set(model.model_fields)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    if name == "align":
        for i, st in enumerate(data.get("stages") or []):
            bad = sorted(set(st) - set(AlignStage.model_fields))
            if bad:
                raise ValueError(f"align.stages.{i}: unknown key(s) {', '.join(bad)}; "
                                 f"allowed: {', '.join(sorted(AlignStage.model_fields))}")
    try:
        return model.model_validate({**data, **wired})
    except ValidationError as e:
        raise ValueError(_format_errors(name, e)) from None


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
    # The free-form stage sections are checked now, with placeholders for what the runner wires.
    wired = {k: PLACEHOLDER for k in WIRED["sft"]}
    try:
        recipe.sft_settings(**wired) if recipe.sft is not None else None
        recipe.preference_settings(**{k: PLACEHOLDER for k in WIRED["preferences"]}) if recipe.preferences is not None else None
        if recipe.merge is not None:
            recipe.merge_config(PLACEHOLDER, PLACEHOLDER)
        if recipe.align is not None:
            recipe.align_settings([PLACEHOLDER, PLACEHOLDER], **{k: PLACEHOLDER for k in WIRED["align"]})
    except ValueError as e:
        raise ValueError(f"{p}: {e}") from None
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
