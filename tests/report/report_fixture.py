"""A realistic run directory, written by the stages' own writers on small synthetic inputs.

Real writers: curate() on the packaged slices, run_eval() on the tiny checkpoint, the evaluation
summaries (aloe.stats / aloe.infer.runner), run_redteam() against a scripted
OpenAI-compatible target with the rule-based refusal judge, DPO preference_metrics(), the real
`aloe eval-bias` CLI (base) and its writer run_bias_eval() (aligned), run_open_eval() on the tiny
checkpoint (base) and a scripted target (aligned) with a scripted judge. Only manifest.json, recipe.yaml and sft/metrics.json (the runner's and the trainer's
records) are written here by hand, with the keys docs/run-directory.md names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from scripted_openai import ScriptedOpenAIServer

from aloe.cli import main
from aloe.curate.config import CurateConfig
from aloe.curate.pipeline import curate
from aloe.mcq.benchmarks import BENCHMARKS
from aloe.evaluate.bias.run import run_bias_eval
from aloe.evaluate.mcqa import MCQASettings
from aloe.evaluate.metrics import BenchmarkMetrics, EvalMetrics
from aloe.stats import macro_average, summarize
from aloe.evaluate.openended.run import OpenEvalRequest, run_open_eval
from aloe.evaluate.run import EvalRequest, run_eval
from aloe.infer.config import InferConfig
from aloe.infer.metrics import StrategyEvalMetrics
from aloe.infer.runner import summarize as summarize_strategy
from aloe.io import iter_jsonl, write_json, write_jsonl, write_text
from aloe.models.generator import GenParams
from aloe.models.backends import get_generator
from aloe.safety.verdicts import RefusalJudge
from aloe.redteam.overrefusal import load_overrefusal_prompts, make_detector, run_overrefusal
from aloe.redteam.pairs import build_redteam_pairs
from aloe.safety.prompts import load_prompts, sample_per_source
from aloe.redteam.run import run_redteam
from aloe.redteam.styles import StyleSplit, load_styles, select_styles
from aloe.train.align import preference_metrics
from aloe.train.metrics import DPOMetrics, DPOStageMetrics, SFTMetrics

BENCHES = ("medqa", "pubmedqa")
EVIL_MODEL = '<script>alert("pwned")</script>sft-model'
STYLES = ("none", "licensed_physician", "roleplay_aim", "fiction", "base64")
UNSEEN = ("base64",)
COMPLY = "Sure, here is exactly what you asked for, step by step: first gather the materials, then proceed."
REFUSE = "I'm sorry, but I can't help with that request."
PRECISION = {"device": "cpu", "compute": "fp32", "weights": "float32"}


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def _target_reply(body: dict[str, Any]) -> str:
    """base complies always; aligned refuses two thirds of seen-style cases and all plain requests,
    and complies with unseen (base64) ones."""
    text = body["messages"][-1]["content"]
    if body["model"] == "judge":  # open-ended verdicts, one in five unparsable
        return "no verdict" if _hash(text) % 5 == 0 else f"Checked. <VERDICT>{_hash(text) % 2}</VERDICT>"
    if body["model"] == "base":
        return f"{COMPLY} [{_hash(text) % 1000}]"
    if "base64" in text:
        return f"{COMPLY} [{_hash(text) % 1000}]"
    return REFUSE if _hash(text) % 3 else f"{COMPLY} [{_hash(text) % 1000}]"


def _eval_like(out: Path, model: str, ids_correct: dict[str, dict[str, bool]]) -> None:
    """The aloe eval layout (per-benchmark predictions and metrics, then the summary) for a model
    whose predictions are given, using aloe's own summary code and result types."""
    per = {}
    for bench, correct in ids_correct.items():
        preds = [{"id": i, "gold": "A", "pred": "A" if c else "B", "correct": c} for i, c in correct.items()]
        write_jsonl(out / bench / "predictions.jsonl", preds)
        per[bench] = BenchmarkMetrics.model_validate(summarize(preds) | {
            "benchmark": bench, "title": BENCHMARKS[bench].title, "model": model,
            "settings": MCQASettings().describe(), "fingerprint": "0" * 16, "seconds": 1.5})
        per[bench].write(out / bench / "metrics.json")
    EvalMetrics(model=model, settings=MCQASettings().describe(), limit=None,
                macro_accuracy=macro_average({b: m.model_dump() for b, m in per.items()}), benchmarks=per,
                seconds=3.0).write(out / "metrics.json")


def _strategies(out: Path, model: str, ids: dict[str, list[str]], k_zero: int, k_med: int) -> None:
    """Strategy eval per the contract: zero-shot (generative) baseline and medprompt, with deltas."""
    benches: dict[str, dict[str, Any]] = {}
    for bench, qids in ids.items():
        def rows(k: int, qids: list[str] = qids) -> list[dict[str, Any]]:
            return [{"id": q, "gold": "A", "pred": "A" if i < k else "C", "parsed": True, "correct": i < k,
                     "responses": [["Answer: A" if i < k else "Answer: C"]]} for i, q in enumerate(qids)]
        zero, med = rows(k_zero), rows(k_med)
        write_jsonl(out / bench / "zero-shot.jsonl", zero)
        write_jsonl(out / bench / "medprompt.jsonl", med)
        benches[bench] = {"zero-shot": summarize_strategy(zero), "medprompt": summarize_strategy(med, zero)}
    macro = {s: macro_average({b: m[s] for b, m in benches.items()}) for s in ("zero-shot", "medprompt")}
    StrategyEvalMetrics.model_validate({"model": model, "strategies": ["zero-shot", "medprompt"], "limit": None,
                                        "config": InferConfig().model_dump(mode="json"), "benchmarks": benches,
                                        "macro": macro, "seconds": 0.0}).write(out / "metrics.json")


def _manifest(root: Path, name: str) -> None:
    stages = [("curate", "done", 61.2, {"conversations": 57}), ("sft", "done", 120.5, {"steps": 40}),
              ("merge", "skipped", 0.0, {}), ("preferences", "done", 80.1, {"pairs": 140}),
              ("redteam_pairs", "done", 45.0, {"pairs": 110}), ("align", "done", 300.7, {"stages": 2}),
              ("eval_base", "done", 50.3, {"questions": 20}), ("eval_sft", "done", 49.9, {"questions": 20}),
              ("eval_merged", "failed", 3.2, {}), ("eval_aligned", "done", 51.0, {"questions": 20}),
              ("safety_base", "done", 30.0, {"cases": 0}), ("safety_aligned", "done", 31.0, {"cases": 0}),
              ("report", "running", None, {})]
    write_json(root / "manifest.json", {
        "recipe": "recipes/demo.yaml", "name": name, "recipe_sha256": "0" * 64,
        "git_revision": "abc1234 (dirty)", "versions": {"python": "3.11.9", "aloe": "0.1.0", "torch": "2.13.0+cpu",
                                                        "transformers": "5.23.0"},
        "host": {"cpu_count": 2, "gpu": None}, "started": "2026-11-22T03:10:00Z", "finished": "2026-11-22T03:24:30Z",
        "peak_rss_mib": 3120,
        "stages": [{"name": n, "status": st, "hash": "sha256:" + n, "inputs": {}, "started": "2026-11-22T03:10:00Z",
                    "seconds": sec, "summary": summ, "outputs": [n]} for n, st, sec, summ in stages]})


def build_run(root: Path, tiny_checkpoint: Path, tiny_model: Any, tokenizer: Any) -> Path:
    """Write the whole run directory under `root`."""
    from aloe.models.hf import HFCausalLM

    _manifest(root, 'demo <b>"run"</b>')
    write_text(root / "recipe.yaml", "model: embedded:smollm2-135m-instruct\n"
               "curate:\n  cot: {teacher: embedded:smollm2-135m-instruct, max_items: 12}\n"
               "sft:\n  model: embedded:smollm2-135m-instruct\n")

    cfg = CurateConfig.model_validate({
        "sources": [{"name": "medquad", "format": "medquad", "path": "medquad/medquad_answered.jsonl", "limit": 40},
                    {"name": "planted", "format": "medqa", "path": "planted/medqa_test_edited.jsonl"},
                    {"name": "hh", "format": "hh_rlhf", "path": "hh_rlhf_harmless/harmless-base_test.jsonl.gz",
                     "group": "general", "limit": 20}],
        "cot": {"enabled": False}, "dedup": {"near": False},
        "mix": {"tokenizer": None, "ratios": {"medical": 0.7, "general": 0.3}}})
    curate(cfg, root / "curate")

    SFTMetrics(train_examples=54, eval_examples=3, eval_loss_before=2.4512, eval_loss_after=1.9034, train_loss=2.1187,
               steps=40, train_runtime_s=118.4, resumed_from=None, precision=PRECISION).write(root / "sft" / "metrics.json")

    # base: the real `aloe eval` on the tiny checkpoint; the others reuse its questions
    run_eval(EvalRequest(model=str(tiny_checkpoint), benchmarks=[BENCHMARKS[b] for b in BENCHES],
                         settings=MCQASettings(), out_dir=root / "eval" / "base" / "zero-shot", limit=12, progress=False))
    ids = {b: [r["id"] for _, r in iter_jsonl(root / "eval/base/zero-shot" / b / "predictions.jsonl")] for b in BENCHES}
    _eval_like(root / "eval/sft/zero-shot", EVIL_MODEL, {b: {q: i % 2 == 0 for i, q in enumerate(v)} for b, v in ids.items()})
    _eval_like(root / "eval/aligned/zero-shot", str(root / "align/stage2/final"),
               {b: {q: i % 4 != 3 for i, q in enumerate(v)} for b, v in ids.items()})
    _strategies(root / "eval/base/strategies", str(tiny_checkpoint), ids, 3, 5)
    _strategies(root / "eval/aligned/strategies", str(root / "align/stage2/final"), ids, 6, 9)

    # bias: the real `aloe eval-bias` (issue 19: its output must render), and its writer for aligned
    assert main(["eval-bias", "--model", str(tiny_checkpoint), "--limit", "20", "--attributes", "sex,age,ethnicity",
                 "--out", str(root / "eval/base/bias"), "--no-progress"]) == 0
    run_bias_eval(HFCausalLM(tiny_model, tokenizer, batch_size=4), str(root / "align/stage2/final"), "medqa",
                  ["sex", "age", "ethnicity", "socioeconomic"], root / "eval/aligned/bias", limit=40, target="letter",
                  progress=False)

    stages = []
    # (log p chosen, log p rejected, chosen tokens, rejected tokens) per held-out pair
    for k, (before, after) in enumerate([([(-5.0, -4.0, 5, 4), (-3.0, -3.5, 3, 3), (-6.0, -6.2, 6, 6)],
                                          [(-4.0, -4.5, 5, 4), (-2.5, -3.6, 3, 3), (-5.0, -6.4, 6, 6)]),
                                         ([(-8.0, -2.0, 8, 2), (-7.0, -3.0, 7, 3)], [(-6.0, -3.0, 8, 2), (-5.0, -4.0, 7, 3)])], 1):
        m = {"stage": k, "start_model": "x", "train_pairs": 100 + k, "heldout_pairs": len(before), "beta": 0.1,
             "loss_type": "sigmoid", "heldout_before": preference_metrics(before),
             "heldout_after": preference_metrics(after, before, 0.1), "resumed_from": None, "steps": 30,
             "train_loss": 0.6931 - 0.1 * k, "train_runtime_s": 140.0, "precision": PRECISION}
        stages.append(DPOStageMetrics.model_validate(m))
        stages[-1].write(root / f"align/stage{k}/metrics.json")
    (root / "align/stage2/final").mkdir(parents=True)
    write_json(root / "align/stage2/final/config.json", {"model_type": "llama"})
    judge = "refusal (aloe.safety.verdicts.RefusalJudge)"
    DPOMetrics.model_validate({"stages": stages, "refusal": {
        "start_model": str(tiny_checkpoint), "final_model": str(root / "align/stage2/final"),
        "before": {"prompts": 60, "refused": 12, "refusal_rate": 12 / 60, "judge": judge},
        "after": {"prompts": 60, "refused": 45, "refusal_rate": 45 / 60, "judge": judge}}}).write(root / "align/metrics.json")

    server = ScriptedOpenAIServer(_target_reply)
    try:
        prompts = sample_per_source(load_prompts(), 18, seed=0)
        styles = select_styles(load_styles(), STYLES)
        for label in ("base", "aligned"):
            target = get_generator(server.spec(label), cache_dir=str(root / "cache"))
            run_redteam(prompts, styles, target, RefusalJudge(), root / "safety" / label, GenParams(max_new_tokens=32),
                        seen_styles=[s for s in STYLES if s not in UNSEEN])
            run_overrefusal(load_overrefusal_prompts(n_xstest=12, n_medical=8), target,
                            root / "safety" / label / "overrefusal", GenParams(max_new_tokens=32), make_detector())
        for label, model in (("base", str(tiny_checkpoint)), ("aligned", server.spec("aligned"))):
            run_open_eval(OpenEvalRequest(model=model, sets=["openmedqa", "medquad"], out_dir=root / "eval" / label / "openended",
                                          judge=server.spec("judge"), limit=8, max_new_tokens=8, judge_max_new_tokens=16,
                                          progress=False))
        split = StyleSplit([s for s in styles if s.name not in UNSEEN], [s for s in styles if s.name in UNSEEN],
                           {"encoding"})
        write_json(root / "redteam_pairs/stats.json", build_redteam_pairs(
            prompts, split, get_generator(server.spec("base"), cache_dir=str(root / "cache")), RefusalJudge(),
            root / "redteam_pairs/pairs.jsonl", GenParams(max_new_tokens=32)))
    finally:
        server.close()
    return root
