"""The Aloe recipe as runner stages: each calls one stage's public API with paths wired from the run
directory (docs/run-directory.md), and returns the counts the manifest and the report show."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Literal

import yaml

from aloe.io import read_json, write_json
from aloe.models.precision import Policy, resolve_policy
from aloe.recipe.runner import StageSpec
from aloe.run_layout import LABELS, model_dir
from aloe.recipe.schema import AlignSection, MergeSection, PreferencesSection, Recipe, SFTSection, resolve
from aloe.train.metrics import DPOMetrics, Precision, SFTMetrics

log = logging.getLogger(__name__)


@dataclass
class Context:
    recipe: Recipe
    run_dir: Path
    data_dir: Path | None = None
    _holders: dict[str, Any] = field(default_factory=dict)
    redteam: Any = None  # RedteamSetup, once read

    def dir(self, stage: str) -> Path:
        return self.run_dir / stage

    @cached_property
    def policy(self) -> Policy:
        """The run's device and per-role precision (aloe.models.precision.resolve_policy)."""
        return resolve_policy(self.recipe.device, self.recipe.precision, self.recipe.scoring_precision)

    def dtype(self, role: Literal["generate", "score"], asked: str | None) -> str:
        """A section's explicit dtype, else the policy's for the role."""
        return asked or (self.policy.generate_dtype if role == "generate" else self.policy.score_dtype)

    def train_policy(self, section: Any) -> dict[str, Any]:
        """The trainer's device and precision from the policy, for the keys its section leaves unset."""
        explicit = section.model_fields_set if section is not None else set()
        return {k: v for k, v in self.policy.train_settings().items() if k not in explicit}

    @cached_property
    def base_model(self) -> str:
        """The base model as a folder when it is local or embedded, so every stage sees one path."""
        from aloe.models.spec import parse_model_spec

        spec = parse_model_spec(self.recipe.model)
        if spec.kind == "embedded":
            from aloe.models.loading import resolve_weights

            return str(resolve_weights(spec))
        return self.recipe.model

    def model(self, label: str) -> str:
        if label == "base":
            return self.base_model
        return str(model_dir(self.run_dir, label, merged=self.recipe.merge is not None))

    def holder(self, label: str, dtype: str, batch_size: int) -> Any:
        """One loaded model at a time, reused by the eval, open-ended, bias and safety stages of the
        same model; a stage's precision and batch size are set on it, never a reason to read the
        weights again (a bf16 copy for generation is cast from the fp32 one in memory)."""
        from aloe.models.holder import ModelHolder

        holder = ModelHolder(self.model(label), dtype, batch_size, self.policy.device)
        if holder.key not in self._holders:
            self._holders.clear()
            self._holders[holder.key] = holder
        held = self._holders[holder.key]
        held.dtype, held.batch_size = dtype, batch_size
        return held


# -- curate -----------------------------------------------------------------------------------
def curate_settings(ctx: Context) -> Any:
    return ctx.recipe.curate


def curate_inputs(ctx: Context) -> list[Path]:
    from aloe.curate.sources import source_path

    return [source_path(s, ctx.data_dir) for s in ctx.recipe.curate.sources if s.format != "hub"]


def run_curate(ctx: Context) -> dict[str, Any]:
    from aloe.curate.pipeline import curate

    cfg = ctx.recipe.curate
    if not cfg.cot.cache_dir:
        # The run's cache, not the stage folder: a changed curate setting reruns the stage, which
        # clears its folder, and the teacher answers already paid for must survive that.
        cfg = cfg.model_copy(update={"cot": cfg.cot.model_copy(update={"cache_dir": str(ctx.run_dir / "cache" / "curate")})})
    curate(cfg, ctx.dir("curate"), ctx.data_dir)
    card = read_json(ctx.dir("curate") / "data_card.json")
    return {"train": card["splits"]["train"], "validation": card["splits"]["validation"],
            "by_group": card["by_group"], "cot_verified": card["cot"].get("verified", 0),
            "decontaminated": len(card["decontamination"]["removed"])}


# -- sft ---------------------------------------------------------------------------------------
def sft_wired(ctx: Context) -> dict[str, Any]:
    ds = ctx.dir("curate") / "dataset"
    return {"model": ctx.base_model, "data": str(ds / "train.jsonl"), "eval_data": str(ds / "validation.jsonl"),
            "output_dir": str(ctx.dir("sft")), **ctx.train_policy(ctx.recipe.sft)}


def sft_settings(ctx: Context) -> Any:
    return resolve(ctx.recipe.sft, SFTSection, sft_wired(ctx))


def run_sft(ctx: Context) -> dict[str, Any]:
    settings = sft_settings(ctx)
    m = SFTMetrics.read(_train("sft", settings, ctx.dir("sft")))
    _note_trainer(settings.model, m.precision)
    return {"train_examples": m.train_examples, "steps": m.steps, "eval_loss_before": m.eval_loss_before,
            "eval_loss_after": m.eval_loss_after, "train_loss": m.train_loss}


def _train(stage: str, settings: Any, sdir: Path) -> Path:
    """In this process, or with `accelerate_config` through `aloe sft|align` launched by accelerate
    (DeepSpeed / FSDP need their own processes) with the resolved settings as YAML; returns the path
    of the metrics it wrote, which the caller reads through their type either way, so that a launched
    process's are checked too."""
    if not settings.accelerate_config:
        from aloe.train.align import run_align
        from aloe.train.sft import run_sft as sft

        if stage == "sft":
            sft(settings)
        else:
            run_align(settings)
    else:
        cfg = sdir / f"{stage}.resolved.yaml"
        cfg.write_text(yaml.safe_dump({stage: settings.model_dump(mode="json")}, sort_keys=False), encoding="utf-8")
        cmd = [sys.executable, "-m", "aloe.cli", stage, str(cfg)]
        log.warning("launching %s", " ".join(cmd))
        if subprocess.call(cmd) != 0:
            raise RuntimeError(f"{stage}: the accelerate launch failed (see its output above)")
    return Path(settings.output_dir) / "metrics.json"


def _note_trainer(model: str, precision: Precision) -> None:
    """A trainer's real device and precision, from its metrics, for the manifest."""
    from aloe.models.precision import note_model

    note_model("trainer", model, precision.device, precision.compute)


# -- merge -------------------------------------------------------------------------------------
def merge_wired(ctx: Context) -> dict[str, Any]:
    """The SFT model (the one entry of `models`) into the general model."""
    return {"base_model": ctx.recipe.general_model or ctx.base_model, "models": [{"model": ctx.model("sft")}]}


def merge_settings(ctx: Context) -> Any:
    return resolve(ctx.recipe.merge, MergeSection, merge_wired(ctx))


def run_merge(ctx: Context) -> dict[str, Any]:
    from aloe.merge.merger import merge_checkpoints

    cfg = merge_settings(ctx)
    merge_checkpoints(cfg, ctx.dir("merge") / "model")
    return {"method": cfg.method, "base_model": Path(cfg.base_model).name}


# -- preferences (DPO stage 1) -----------------------------------------------------------------
def preferences_wired(ctx: Context) -> dict[str, Any]:
    rt = ctx.recipe.redteam
    wired: dict[str, Any] = {"output": str(ctx.dir("preferences") / "stage1.jsonl"), "model": ctx.model("merged"),
                             "cache_dir": str(ctx.run_dir / "cache"),
                             "safety_data_dir": str(ctx.data_dir) if ctx.data_dir else None}
    if rt:  # one prompt split for every stage, so red-team test prompts are never trained on
        wired.update({"prompt_test_fraction": rt.prompt_test_fraction, "seed": rt.seed})
    return wired


def preference_settings(ctx: Context) -> Any:
    return resolve(ctx.recipe.preferences, PreferencesSection, preferences_wired(ctx))


def run_preferences(ctx: Context) -> dict[str, Any]:
    from aloe.train.preferences import build_preferences

    stats = build_preferences(preference_settings(ctx))
    return {"pairs": stats["total_pairs"], **{k: v.get("pairs") for k, v in stats.items() if isinstance(v, dict)}}


# -- red-team pairs (DPO stage 2) and the safety evaluation --------------------------------------
@dataclass
class RedteamSetup:
    train: list[Any]
    test: list[Any]
    split: Any
    styles: list[Any]


def redteam_setup(ctx: Context) -> RedteamSetup:
    """The prompt and style split, read once per run (the pairs and every safety stage share it)."""
    if ctx.redteam is None:
        ctx.redteam = _read_redteam(ctx)
    return ctx.redteam


def _read_redteam(ctx: Context) -> RedteamSetup:
    from aloe.safety.prompts import load_prompts, split_prompts
    from aloe.redteam.styles import load_styles, split_styles

    rt = ctx.recipe.redteam
    prompts = load_prompts(rt.sources, ctx.data_dir)
    styles = list(load_styles(ctx.data_dir).values())
    split = split_styles(styles, rt.test_families, rt.n_test_families, rt.seed)
    train, test = split_prompts(prompts, rt.prompt_test_fraction, rt.seed)
    return RedteamSetup(train, test, split, styles)


def _params(ctx: Context) -> Any:
    from aloe.models.generator import GenParams

    rt = ctx.recipe.redteam
    return GenParams(max_new_tokens=rt.max_new_tokens, temperature=0.0, seed=rt.seed)


def _generator(ctx: Context, label: str, dtype: str | None, batch_size: int) -> Any:
    """The label's model generating through the run's engine; under vLLM the holder owns the engine,
    so moving on to the next model releases it."""
    from aloe.models.backends import get_generator
    from aloe.models.spec import parse_model_spec

    if parse_model_spec(ctx.model(label)).kind in ("openai", "vllm"):
        return get_generator(ctx.model(label), cache_dir=str(ctx.run_dir / "cache"))
    return ctx.holder(label, ctx.dtype("generate", dtype), batch_size).generator(ctx.run_dir / "cache" / label)


def redteam_pairs_settings(ctx: Context) -> Any:
    rt = ctx.recipe.redteam
    return {**rt.model_dump(exclude={"eval"}), "target": ctx.model("merged")}


def run_redteam_pairs(ctx: Context) -> dict[str, Any]:
    from aloe.models.backends import get_generator
    from aloe.redteam.judges import make_judge
    from aloe.redteam.pairs import build_redteam_pairs
    from aloe.safety.prompts import sample_per_source

    rt = ctx.recipe.redteam
    setup = redteam_setup(ctx)
    cache = str(ctx.run_dir / "cache")
    picked = sample_per_source(setup.train, rt.pairs.n_prompts, rt.seed)
    teacher = get_generator(rt.pairs.teacher, cache_dir=cache) if rt.pairs.teacher else None
    stats = build_redteam_pairs(picked, setup.split, _generator(ctx, "merged", rt.dtype, rt.batch_size),
                                make_judge(rt.judge, cache_dir=cache), ctx.dir("redteam_pairs") / "pairs.jsonl",
                                _params(ctx), teacher=teacher, test_fraction=rt.prompt_test_fraction, seed=rt.seed,
                                styles_per_prompt=rt.pairs.styles_per_prompt)
    write_json(ctx.dir("redteam_pairs") / "stats.json", stats)
    return {k: stats[k] for k in ("cases", "unsafe", "pairs", "distinct_chosen")}


def safety_settings(ctx: Context, label: str) -> Any:
    rt = ctx.recipe.redteam
    # The harmful prompts, and the XSTest over-refusal prompts, are read from the data dir when set.
    return {**rt.model_dump(exclude={"pairs"}), "target": ctx.model(label),
            "data_dir": str(ctx.data_dir) if ctx.data_dir else None}


def run_safety(ctx: Context, label: str) -> dict[str, Any]:
    from dataclasses import replace

    from aloe.redteam.judges import make_judge
    from aloe.redteam.overrefusal import load_overrefusal_prompts, make_detector, run_overrefusal
    from aloe.safety.prompts import sample_per_source
    from aloe.redteam.run import run_redteam

    rt = ctx.recipe.redteam
    over = rt.eval.overrefusal
    # Read before the ASR run, so a data dir without XSTest fails before any generation is paid for.
    benign = load_overrefusal_prompts(ctx.data_dir, over.n_xstest, over.n_medical) if over else []
    setup = redteam_setup(ctx)
    picked = sample_per_source(setup.test, rt.eval.n_prompts, rt.seed)
    target = _generator(ctx, label, rt.dtype, rt.batch_size)
    m = run_redteam(picked, setup.styles, target,
                    make_judge(rt.judge, cache_dir=str(ctx.run_dir / "cache")), ctx.dir(f"safety/{label}"),
                    _params(ctx), seen_styles=[s.name for s in setup.split.train], system_prompt=rt.eval.system_prompt,
                    meta={"label": label, "held_out_families": sorted(setup.split.test_families), "seed": rt.seed},
                    styles_per_prompt=rt.eval.styles_per_prompt)
    o = m["overall"]
    summary = {"prompts": len(picked), "cases": o["n"], "asr": o["asr"], "unsafe": o["unsafe"]}
    if over:
        params = replace(_params(ctx), max_new_tokens=over.max_new_tokens or rt.max_new_tokens)
        om = run_overrefusal(benign, target, ctx.dir(f"safety/{label}") / "overrefusal", params, make_detector(),
                             system_prompt=rt.eval.system_prompt, meta={"label": label})
        summary.update({"overrefusal_prompts": len(benign), "overrefusal_rate": om["overall"]["rate"]})
    return summary


# -- align ---------------------------------------------------------------------------------------
def align_wired(ctx: Context) -> dict[str, Any]:
    # Stage 1 trains on the preference pairs, stage 2 on the red-team pairs; the held-out refusal
    # rate is off because the safety stages measure the aligned model on the red-team test half.
    data = [str(ctx.dir("preferences") / "stage1.jsonl"), str(ctx.dir("redteam_pairs") / "pairs.jsonl")]
    return {"model": ctx.model("merged"), "output_dir": str(ctx.dir("align")), "refusal_eval": None,
            "stages": [{"data": d} for d in data], **ctx.train_policy(ctx.recipe.align)}


def align_settings(ctx: Context) -> Any:
    return resolve(ctx.recipe.align, AlignSection, align_wired(ctx))


# What the runner sets on a stage's settings, over its recipe section: `--dry-run` prints it.
WIRED = {"sft": sft_wired, "merge": merge_wired, "preferences": preferences_wired, "align": align_wired}


def run_align(ctx: Context) -> dict[str, Any]:
    m = DPOMetrics.read(_train("align", align_settings(ctx), ctx.dir("align")))
    out: dict[str, Any] = {}
    for st in m.stages:
        _note_trainer(st.start_model, st.precision)  # each stage trains the previous one's output
        k = st.stage
        out[f"stage{k}_pairs"] = st.train_pairs
        for when, h in (("before", st.heldout_before), ("after", st.heldout_after)):
            if h:
                out[f"stage{k}_pref_acc_{when}"] = round(h.preference_accuracy, 3)
        after = st.heldout_after
        if after and after.reward_margin is not None and after.reward_accuracy is not None:
            out[f"stage{k}_reward_margin"] = round(after.reward_margin, 4)
            out[f"stage{k}_reward_acc"] = round(after.reward_accuracy, 3)
    return out


# -- evaluation -------------------------------------------------------------------------------------
def eval_settings(ctx: Context, label: str) -> Any:
    ev = ctx.recipe.eval
    strategies = ev.strategies if ev.strategies and label in ev.strategies.models else None
    return {**ev.model_dump(exclude={"strategies", "openended", "bias", "models", "limits", "limit"}),
            "limit": ev.limits.get(label, ev.limit),
            "model": ctx.model(label),
            "strategies": strategies.model_dump(mode="json", exclude={"models"}) if strategies else None,
            "data_dir": str(ctx.data_dir) if ctx.data_dir else None}


def run_eval_stage(ctx: Context, label: str) -> dict[str, Any]:
    from aloe.mcq.benchmarks import parse_benchmarks
    from aloe.evaluate.mcqa import MCQASettings
    from aloe.evaluate.run import EvalRequest, run_eval

    ev = ctx.recipe.eval
    sdir = ctx.dir(f"eval/{label}")
    score = ctx.dtype("score", ev.dtype)
    summary = run_eval(EvalRequest(model=ctx.model(label), benchmarks=parse_benchmarks(ev.benchmarks),
                                   settings=MCQASettings(mode="loglik", target=ev.target, shots=ev.shots),
                                   out_dir=sdir / "zero-shot", limit=ev.limits.get(label, ev.limit), data_dir=ctx.data_dir,
                                   batch_size=ev.batch_size, dtype=score, holder=ctx.holder(label, score, ev.batch_size)))
    out: dict[str, Any] = {"macro_accuracy": round(summary["macro_accuracy"], 4),
                           "questions": sum(b["n"] for b in summary["benchmarks"].values())}
    st = ev.strategies
    if st and label in st.models:
        from aloe.infer.strategy_eval import StrategyEvalRequest, run_strategy_eval

        res = run_strategy_eval(StrategyEvalRequest(
            model=ctx.model(label), benchmarks=parse_benchmarks(st.benchmarks), strategies=st.names,
            config=st.config, out_dir=sdir / "strategies", limit=st.limit, data_dir=ctx.data_dir,
            batch_size=ev.batch_size, generator=ctx.holder(label, ctx.dtype("generate", ev.dtype), ev.batch_size)
            .generator(ctx.run_dir / "cache" / label)))
        from aloe.infer.metrics import StrategyEvalMetrics

        macro = StrategyEvalMetrics.model_validate(res).macro
        out.update({f"{name}_macro": round(acc, 4) for name, acc in macro.items()})
    return out


def _after_eval_settings(ctx: Context, label: str, section: Any) -> dict[str, Any]:
    """A stage that reuses a label's evaluated model: its section, the model, its precision, the data."""
    return {**section.model_dump(exclude={"models"}), "model": ctx.model(label), "dtype": ctx.recipe.eval.dtype,
            "data_dir": str(ctx.data_dir) if ctx.data_dir else None}


def openended_settings(ctx: Context, label: str) -> Any:
    return _after_eval_settings(ctx, label, ctx.recipe.eval.openended)


def run_openended(ctx: Context, label: str) -> dict[str, Any]:
    from aloe.evaluate.openended.metrics import OpenEndedMetrics
    from aloe.evaluate.openended.run import OpenEvalRequest, run_open_eval

    ev = ctx.recipe.eval
    oe = ev.openended
    dtype = ctx.dtype("generate", ev.dtype)  # answers are the work; their perplexity reuses the model
    summary = run_open_eval(OpenEvalRequest(
        model=ctx.model(label), sets=oe.sets, out_dir=ctx.dir(f"eval/{label}/openended"), judge=oe.judge,
        specialty_model=oe.specialty_model, limit=oe.limit, data_dir=ctx.data_dir, max_new_tokens=oe.max_new_tokens,
        judge_max_new_tokens=oe.judge_max_new_tokens, perplexity=oe.perplexity, batch_size=ev.batch_size,
        dtype=dtype, holder=ctx.holder(label, dtype, ev.batch_size), cache_dir=ctx.run_dir / "cache" / label))
    overall = OpenEndedMetrics.model_validate(summary).overall
    figures = {k: f for k in ("judge_accuracy", "rouge_l", "relaxed_perplexity") if (f := overall.figure(k))}
    return {"questions": overall.n, "judge": oe.judge or "none",
            **{k: round(f.mean, 4) for k, f in figures.items() if f.n and f.mean is not None}}


def bias_settings(ctx: Context, label: str) -> Any:
    return _after_eval_settings(ctx, label, ctx.recipe.eval.bias)


def run_bias(ctx: Context, label: str) -> dict[str, Any]:
    from aloe.evaluate.bias.run import run_bias_eval

    ev = ctx.recipe.eval
    b = ev.bias
    lm = ctx.holder(label, ctx.dtype("score", ev.dtype), ev.batch_size).lm
    m = run_bias_eval(lm, ctx.model(label), b.benchmarks, b.attributes,
                      ctx.dir(f"eval/{label}/bias"), limit=b.limit, target=b.target, data_dir=ctx.data_dir)
    return {"questions": m.questions, **{f"{attr}_flip_rate": round(a.flip_rate, 4)
                                         for attr, a in m.attributes.items() if a.flip_rate is not None}}


# -- the base model's results, shared across runs (aloe.recipe.runner's result cache) ---------------
def _inputs_key(ctx: Context, models: list[str | None], files: list[Path | None]) -> dict[str, Any] | None:
    """What a stage's result depends on besides its settings, aloe's code and the library versions:
    the weights of each model it runs, and the data dir and other files it reads (names, sizes and
    modification times). None when a model is served (openai:, vllm:) or a hub id that may move
    upstream: no fingerprint here captures what such a model answers, so the stage runs every time."""
    from aloe.models.loading import weights_fingerprint
    from aloe.models.spec import parse_model_spec
    from aloe.recipe.runner import stat_fingerprint

    specs = [parse_model_spec(m) for m in models if m]
    if any(s.kind not in ("local", "embedded") for s in specs):
        return None
    return {"weights": [weights_fingerprint(s) for s in specs],
            "files": [stat_fingerprint(p) for p in (ctx.data_dir, *files) if p]}


def base_reuse(ctx: Context, stage: Literal["eval", "openended", "bias", "safety"]) -> dict[str, Any] | None:
    """The base model's evaluations come out the same in every run of a recipe until an input changes."""
    from aloe.models.embeddings import DEFAULT_EMBEDDING_MODEL

    ev, base = ctx.recipe.eval, ctx.model("base")
    if stage == "eval":
        st = ev.strategies.config if ev.strategies and "base" in ev.strategies.models else None
        files = [st.cot_db, st.rag.corpus, None if st.embedding_model == DEFAULT_EMBEDDING_MODEL
                 else Path(st.embedding_model)] if st else []
        return _inputs_key(ctx, [base], files)
    if stage == "openended":
        return _inputs_key(ctx, [base, ev.openended.judge, ev.openended.specialty_model], [])
    if stage == "bias":
        return _inputs_key(ctx, [base], [])
    # the judge: `refusal`, `harm-clf:<packaged fit or JSON file>` or `<kind>:<model spec>`
    kind, _, judge = ctx.recipe.redteam.judge.partition(":")
    if kind == "harm-clf":
        return _inputs_key(ctx, [base], [Path(judge) if Path(judge).is_file() else None])
    return _inputs_key(ctx, [base, judge or None], [])


def _shared(label: str, stage: Any) -> Any:
    """The other models come out of this run's training: only the base model's results recur in other runs."""
    return partial(base_reuse, stage=stage) if label == "base" else None


# -- report ---------------------------------------------------------------------------------------
def run_report(ctx: Context) -> dict[str, Any]:
    from aloe.report import render_all

    final = Path(ctx.model("aligned" if ctx.recipe.align is not None else "merged"))
    paths = render_all(ctx.run_dir, final if final.is_dir() else None)
    return {k: str(p) for k, p in paths.items()}


def build_stages(recipe: Recipe) -> list[StageSpec]:
    """The recipe's stages in order; a section left out of the recipe switches its stage off."""
    r = recipe
    stages: list[StageSpec] = []
    if r.curate:
        stages.append(StageSpec("curate", run_curate, curate_settings, external=curate_inputs,
                                outputs=["curate/dataset", "curate/data_card.md"]))
    if r.sft is not None:
        stages.append(StageSpec("sft", run_sft, sft_settings, after=["curate"], outputs=["sft/final"],
                                scratch=["checkpoints"]))
    if r.merge:
        stages.append(StageSpec("merge", run_merge, merge_settings, after=["sft"], outputs=["merge/model"]))
    upstream = "merge" if r.merge else "sft"
    if r.preferences is not None:
        stages.append(StageSpec("preferences", run_preferences, preference_settings, after=[upstream],
                                outputs=["preferences/stage1.jsonl"]))
    if r.redteam and r.align is not None:
        stages.append(StageSpec("redteam_pairs", run_redteam_pairs, redteam_pairs_settings, after=[upstream],
                                outputs=["redteam_pairs/pairs.jsonl"]))
    if r.align is not None:
        if r.preferences is None or not r.redteam:
            raise ValueError("align needs the preferences and redteam sections (its two DPO stages' pairs)")
        stages.append(StageSpec("align", run_align, align_settings, after=["preferences", "redteam_pairs"],
                                outputs=["align/metrics.json"], scratch=["stage*/checkpoints"]))
    made = {"base": [], "sft": ["sft"], "merged": [upstream], "aligned": ["align"]}
    present = {s.name for s in stages}
    labels = [lab for lab in LABELS if all(d in present for d in made[lab])]
    if r.merge is None:
        labels = [lab for lab in labels if lab != "merged"]
    for lab in labels:
        if r.eval and lab in r.eval.models:
            stages.append(StageSpec(f"eval_{lab}", lambda c, lab=lab: run_eval_stage(c, lab),
                                    lambda c, lab=lab: eval_settings(c, lab), after=made[lab],
                                    folder=f"eval/{lab}", outputs=[f"eval/{lab}/zero-shot/metrics.json"],
                                    reuse=_shared(lab, "eval")))
            # After the eval stage, to reuse the model it loaded; they depend only on what made the model,
            # so a rerun of eval alone (another limit) neither clears nor reruns them.
            for name, sec, fn, settings in (("openended", r.eval.openended, run_openended, openended_settings),
                                            ("bias", r.eval.bias, run_bias, bias_settings)):
                if sec and lab in sec.models:
                    stages.append(StageSpec(f"{name}_{lab}", lambda c, lab=lab, fn=fn: fn(c, lab),
                                            lambda c, lab=lab, settings=settings: settings(c, lab),
                                            after=made[lab], folder=f"eval/{lab}/{name}",
                                            outputs=[f"eval/{lab}/{name}/metrics.json"], reuse=_shared(lab, name)))
        if r.redteam and lab in r.redteam.eval.models:
            stages.append(StageSpec(f"safety_{lab}", lambda c, lab=lab: run_safety(c, lab),
                                    lambda c, lab=lab: safety_settings(c, lab), after=made[lab],
                                    folder=f"safety/{lab}", outputs=[f"safety/{lab}/metrics.json"],
                                    reuse=_shared(lab, "safety")))
    if r.report:
        stages.append(StageSpec("report", run_report, lambda c: {"stages": sorted(present)},
                                after=[s.name for s in stages], outputs=["report/index.html"]))
    return stages
