"""The Aloe recipe as runner stages: each calls one stage's public API with paths wired from the run
directory (docs/run-directory.md), and returns the counts the manifest and the report show."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from aloe.io import read_json, write_json
from aloe.recipe.runner import StageSpec
from aloe.recipe.schema import Recipe

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
        if label == "sft":
            return str(self.dir("sft") / "final")
        if label == "merged":
            return str(self.dir("merge") / "model") if self.recipe.merge else self.model("sft")
        return str(self.dir("align") / "stage2" / "final")  # the red-team stage is the last

    def holder(self, label: str, dtype: str, batch_size: int) -> Any:
        """One loaded model at a time, reused by the eval and safety stages of the same model."""
        from aloe.evaluate.run import ModelHolder

        key = f"{self.model(label)}|{dtype}|{batch_size}"
        if key not in self._holders:
            self._holders.clear()
            self._holders[key] = ModelHolder(self.model(label), dtype, batch_size)
        return self._holders[key]


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
def sft_settings(ctx: Context) -> Any:
    ds = ctx.dir("curate") / "dataset"
    return ctx.recipe.sft_settings(model=ctx.base_model, data=str(ds / "train.jsonl"),
                                   eval_data=str(ds / "validation.jsonl"), output_dir=str(ctx.dir("sft")))


def run_sft(ctx: Context) -> dict[str, Any]:
    m = _train("sft", sft_settings(ctx), ctx.dir("sft"))
    return {k: m.get(k) for k in ("train_examples", "steps", "eval_loss_before", "eval_loss_after", "train_loss")}


def _train(stage: str, settings: Any, sdir: Path) -> dict[str, Any]:
    """In this process, or with `accelerate_config` through `aloe sft|align` launched by accelerate
    (DeepSpeed / FSDP need their own processes) with the resolved settings as YAML; returns metrics."""
    if not settings.accelerate_config:
        from aloe.train.align import run_align
        from aloe.train.sft import run_sft as sft

        return sft(settings) if stage == "sft" else run_align(settings)
    cfg = sdir / f"{stage}.resolved.yaml"
    cfg.write_text(yaml.safe_dump({stage: settings.model_dump(mode="json")}, sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, "-m", "aloe.cli", stage, str(cfg)]
    log.warning("launching %s", " ".join(cmd))
    if subprocess.call(cmd) != 0:
        raise RuntimeError(f"{stage}: the accelerate launch failed (see its output above)")
    return read_json(sdir / "metrics.json")


# -- merge -------------------------------------------------------------------------------------
def merge_settings(ctx: Context) -> Any:
    return ctx.recipe.merge_config(ctx.model("sft"), ctx.recipe.general_model or ctx.base_model)


def run_merge(ctx: Context) -> dict[str, Any]:
    from aloe.merge.merger import merge_checkpoints

    cfg = merge_settings(ctx)
    merge_checkpoints(cfg, ctx.dir("merge") / "model")
    return {"method": cfg.method, "base_model": Path(cfg.base_model).name}


# -- preferences (DPO stage 1) -----------------------------------------------------------------
def preference_settings(ctx: Context) -> Any:
    rt = ctx.recipe.redteam
    wired: dict[str, Any] = {"output": str(ctx.dir("preferences") / "stage1.jsonl"), "model": ctx.model("merged"),
                             "cache_dir": str(ctx.run_dir / "cache"),
                             "safety_data_dir": str(ctx.data_dir) if ctx.data_dir else None}
    if rt:  # one prompt split for every stage, so red-team test prompts are never trained on
        wired.update({"prompt_test_fraction": rt.prompt_test_fraction, "seed": rt.seed})
    return ctx.recipe.preference_settings(**wired)


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
    from aloe.redteam.prompts import load_prompts, split_prompts
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


def _generator(ctx: Context, label: str, dtype: str, batch_size: int) -> Any:
    from aloe.models.generator import get_generator
    from aloe.models.spec import parse_model_spec

    if parse_model_spec(ctx.model(label)).kind in ("openai", "vllm"):
        return get_generator(ctx.model(label), cache_dir=str(ctx.run_dir / "cache"))
    return ctx.holder(label, dtype, batch_size).generator(ctx.run_dir / "cache" / label)


def redteam_pairs_settings(ctx: Context) -> Any:
    rt = ctx.recipe.redteam
    return {**rt.model_dump(exclude={"eval"}), "target": ctx.model("merged")}


def run_redteam_pairs(ctx: Context) -> dict[str, Any]:
    from aloe.models.generator import get_generator
    from aloe.redteam.judges import make_judge
    from aloe.redteam.pairs import build_redteam_pairs
    from aloe.redteam.prompts import sample_per_source

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
    from aloe.redteam.prompts import sample_per_source
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
def align_settings(ctx: Context) -> Any:
    data = [str(ctx.dir("preferences") / "stage1.jsonl"), str(ctx.dir("redteam_pairs") / "pairs.jsonl")]
    return ctx.recipe.align_settings(data, model=ctx.model("merged"), output_dir=str(ctx.dir("align")),
                                     refusal_eval=None)


def run_align(ctx: Context) -> dict[str, Any]:
    m = _train("align", align_settings(ctx), ctx.dir("align"))
    out: dict[str, Any] = {}
    for st in m["stages"]:
        k = st["stage"]
        out[f"stage{k}_pairs"] = st["train_pairs"]
        for when in ("before", "after"):
            h = st.get(f"heldout_{when}")
            if h:
                out[f"stage{k}_pref_acc_{when}"] = round(h["preference_accuracy"], 3)
        after = st.get("heldout_after") or {}
        if after.get("reward_margin") is not None:
            out[f"stage{k}_reward_margin"] = round(after["reward_margin"], 4)
            out[f"stage{k}_reward_acc"] = round(after["reward_accuracy"], 3)
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
    from aloe.evaluate.benchmarks import parse_benchmarks
    from aloe.evaluate.mcqa import MCQASettings
    from aloe.evaluate.run import EvalRequest, run_eval

    ev = ctx.recipe.eval
    sdir = ctx.dir(f"eval/{label}")
    holder = ctx.holder(label, ev.dtype, ev.batch_size)
    summary = run_eval(EvalRequest(model=ctx.model(label), benchmarks=parse_benchmarks(ev.benchmarks),
                                   settings=MCQASettings(mode="loglik", target=ev.target, shots=ev.shots),
                                   out_dir=sdir / "zero-shot", limit=ev.limits.get(label, ev.limit), data_dir=ctx.data_dir,
                                   batch_size=ev.batch_size, dtype=ev.dtype, holder=holder))
    out: dict[str, Any] = {"macro_accuracy": round(summary["macro_accuracy"], 4),
                           "questions": sum(b["n"] for b in summary["benchmarks"].values())}
    st = ev.strategies
    if st and label in st.models:
        from aloe.evaluate.strategy_eval import StrategyEvalRequest, run_strategy_eval

        res = run_strategy_eval(StrategyEvalRequest(
            model=ctx.model(label), benchmarks=parse_benchmarks(st.benchmarks), strategies=st.names,
            config=st.config, out_dir=sdir / "strategies", limit=st.limit, data_dir=ctx.data_dir,
            batch_size=ev.batch_size, generator=holder.generator(ctx.run_dir / "cache" / label)))
        out.update({f"{name}_macro": round(acc, 4) for name, acc in res["macro"].items()})
    return out


def _after_eval_settings(ctx: Context, label: str, section: Any) -> dict[str, Any]:
    """A stage that reuses a label's evaluated model: its section, the model, its precision, the data."""
    return {**section.model_dump(exclude={"models"}), "model": ctx.model(label), "dtype": ctx.recipe.eval.dtype,
            "data_dir": str(ctx.data_dir) if ctx.data_dir else None}


def openended_settings(ctx: Context, label: str) -> Any:
    return _after_eval_settings(ctx, label, ctx.recipe.eval.openended)


def run_openended(ctx: Context, label: str) -> dict[str, Any]:
    from aloe.evaluate.openended.run import OpenEvalRequest, run_open_eval

    ev = ctx.recipe.eval
    oe = ev.openended
    summary = run_open_eval(OpenEvalRequest(
        model=ctx.model(label), sets=oe.sets, out_dir=ctx.dir(f"eval/{label}/openended"), judge=oe.judge,
        specialty_model=oe.specialty_model, limit=oe.limit, data_dir=ctx.data_dir, max_new_tokens=oe.max_new_tokens,
        judge_max_new_tokens=oe.judge_max_new_tokens, perplexity=oe.perplexity, batch_size=ev.batch_size,
        dtype=ev.dtype, holder=ctx.holder(label, ev.dtype, ev.batch_size), cache_dir=ctx.run_dir / "cache" / label))
    overall = summary["overall"]
    return {"questions": overall["n"], "judge": oe.judge or "none",
            **{k: round(overall[k]["mean"], 4) for k in ("judge_accuracy", "rouge_l", "relaxed_perplexity")
               if overall.get(k, {}).get("n")}}


def bias_settings(ctx: Context, label: str) -> Any:
    return _after_eval_settings(ctx, label, ctx.recipe.eval.bias)


def run_bias(ctx: Context, label: str) -> dict[str, Any]:
    from aloe.evaluate.bias.run import run_bias_eval

    ev = ctx.recipe.eval
    b = ev.bias
    m = run_bias_eval(ctx.holder(label, ev.dtype, ev.batch_size).lm, ctx.model(label), b.benchmarks, b.attributes,
                      ctx.dir(f"eval/{label}/bias"), limit=b.limit, target=b.target, data_dir=ctx.data_dir)
    return {"questions": m.questions, **{f"{attr}_flip_rate": round(a.flip_rate, 4)
                                         for attr, a in m.attributes.items() if a.flip_rate is not None}}


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
        stages.append(StageSpec("sft", run_sft, sft_settings, after=["curate"], outputs=["sft/final"]))
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
                                outputs=["align/metrics.json"]))
    made = {"base": [], "sft": ["sft"], "merged": [upstream], "aligned": ["align"]}
    present = {s.name for s in stages}
    labels = [lab for lab in ("base", "sft", "merged", "aligned") if all(d in present for d in made[lab])]
    if r.merge is None:
        labels = [lab for lab in labels if lab != "merged"]
    for lab in labels:
        if r.eval and lab in r.eval.models:
            stages.append(StageSpec(f"eval_{lab}", lambda c, lab=lab: run_eval_stage(c, lab),
                                    lambda c, lab=lab: eval_settings(c, lab), after=made[lab],
                                    folder=f"eval/{lab}", outputs=[f"eval/{lab}/zero-shot/metrics.json"]))
            # After the eval stage, whose folder holds theirs (a rerun of it clears them) and whose model they reuse.
            for name, sec, fn, settings in (("openended", r.eval.openended, run_openended, openended_settings),
                                            ("bias", r.eval.bias, run_bias, bias_settings)):
                if sec and lab in sec.models:
                    stages.append(StageSpec(f"{name}_{lab}", lambda c, lab=lab, fn=fn: fn(c, lab),
                                            lambda c, lab=lab, settings=settings: settings(c, lab),
                                            after=[f"eval_{lab}"], folder=f"eval/{lab}/{name}",
                                            outputs=[f"eval/{lab}/{name}/metrics.json"]))
        if r.redteam and lab in r.redteam.eval.models:
            stages.append(StageSpec(f"safety_{lab}", lambda c, lab=lab: run_safety(c, lab),
                                    lambda c, lab=lab: safety_settings(c, lab), after=made[lab],
                                    folder=f"safety/{lab}", outputs=[f"safety/{lab}/metrics.json"]))
    if r.report:
        stages.append(StageSpec("report", run_report, lambda c: {"stages": sorted(present)},
                                after=[s.name for s in stages], outputs=["report/index.html"]))
    return stages
