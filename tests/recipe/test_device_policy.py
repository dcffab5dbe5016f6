"""Every in-process model a run builds follows the recipe's device and precision.

The tiny recipe runs whole with `--device cpu --precision bf16`, with an in-process CoT teacher and
open-ended judge (the run's own base checkpoint) and a Medprompt strategy (kNN embeddings), while
every model construction is watched at the bottom: transformers' `from_pretrained` (whatever calls
it, trainers included), aloe's `load_causal_lm`, sentence-transformers' constructor, and the
trainer arguments. A model built anywhere without the policy (a default fp32, a default device)
fails the test. A short run under `auto` then shows the roles apart: scoring fp32 on a CPU,
generation bf16.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import test_recipe_run

from aloe.cli import main
from aloe.models import embeddings, precision
from aloe.recipe.manifest_check import gpu_problems

TINY = test_recipe_run.TINY

STRATEGY = ("eval.strategies={names: [medprompt], models: [aligned], benchmarks: medqa, limit: 2, "
            "config: {k_shots: 1, n_samples: 1, max_new_tokens: 8, retry_temperatures: []}}")


class Watch:
    """What was built: every causal LM (and what its loader was asked), embedder and trainer."""

    def __init__(self) -> None:
        self.models: list[Any] = []  # every from_pretrained model, inspected after the run
        self.loads: list[tuple[str, str, str]] = []  # load_causal_lm: (spec, device, dtype) asked for
        self.embedders: list[Any] = []  # SentenceTransformer(device=...) as called
        self.trainers: list[tuple[Any, bool, bool]] = []  # (settings.device, bf16, use_cpu)


@pytest.fixture()
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Watch]:
    import sentence_transformers
    import transformers

    from aloe.models import hf, loading
    from aloe.train import align, sft

    w = Watch()
    from_pretrained = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def watched_from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
        model = from_pretrained(cls, *args, **kwargs)
        w.models.append(model)
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(watched_from_pretrained))
    load = loading.load_causal_lm

    def watched_load(spec: Any, dtype: str | None = None, device: str | None = None, **kw: Any) -> Any:
        model, tok = load(spec, dtype, device, **kw)
        w.loads.append((str(spec), str(model.device), str(model.dtype).removeprefix("torch.")))
        return model, tok

    monkeypatch.setattr(loading, "load_causal_lm", watched_load)
    monkeypatch.setattr(hf, "load_causal_lm", watched_load)
    init = sentence_transformers.SentenceTransformer.__init__

    def watched_init(self: Any, *args: Any, device: Any = None, **kwargs: Any) -> None:
        w.embedders.append(device)
        init(self, *args, device=device, **kwargs)

    monkeypatch.setattr(sentence_transformers.SentenceTransformer, "__init__", watched_init)
    embeddings._load_embedder.cache_clear()  # one loaded by an earlier test would not be built again
    for module in (sft, align):
        args_of = module.trainer_args

        def watched_args(s: Any, _args_of: Any = args_of, **kw: Any) -> dict[str, Any]:
            args = _args_of(s, **kw)
            w.trainers.append((s.device, args["bf16"], args["use_cpu"]))
            return args

        monkeypatch.setattr(module, "trainer_args", watched_args)
    yield w
    embeddings._load_embedder.cache_clear()  # its embedder was built under this test's patches


def _manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text())


def test_every_model_of_a_run_follows_the_recipes_device_and_precision(tmp_path, talking_checkpoint, watch):
    run_dir = tmp_path / "run"
    ckpt = str(talking_checkpoint)
    code = main(["run", str(TINY), "--run-dir", str(run_dir), "--device", "cpu", "--precision", "bf16",
                 "--set", f"model={ckpt}", "--set", f"curate.cot.teacher={ckpt}",
                 "--set", f"eval.openended.judge={ckpt}", "--set", STRATEGY])
    assert code == 0

    # Everything that was built, was built in bf16 on the CPU: transformers' models whoever loaded
    # them (teacher, targets, scorers, judges, trainers), aloe's loader, the embedders.
    built = [(type(m).__name__, {str(p.dtype) for p in m.parameters()}) for m in watch.models]
    assert built and all(dtypes == {"torch.bfloat16"} for _, dtypes in built), built
    assert {d for _, d, _ in watch.loads} == {"cpu"} and {t for _, _, t in watch.loads} == {"bfloat16"}
    assert watch.embedders and set(watch.embedders) == {"cpu"}
    assert watch.trainers and set(watch.trainers) == {("cpu", True, True)}  # SFT and both DPO stages
    assert len(watch.trainers) == 3
    loaded = {spec for spec, _, _ in watch.loads}
    for made_by_the_run in ("merge/model", "align/stage2/final"):
        assert str(run_dir / made_by_the_run) in loaded
    assert ckpt in loaded  # the CoT teacher, the base model and the open-ended judge

    m = _manifest(run_dir)
    assert {k: m["policy"][k] for k in ("device", "precision", "train", "generate_dtype", "score_dtype")} == {
        "device": "cpu", "precision": "bf16", "train": "bf16", "generate_dtype": "bfloat16", "score_dtype": "bfloat16"}
    assert "bf16_capable" in m["policy"]["cpu"] and m["engine"] == {"name": "transformers"}
    rows = {r["name"]: r for r in m["stages"]}
    for name in ("curate", "sft", "preferences", "redteam_pairs", "align", "eval_base", "openended_base",
                 "safety_base", "eval_aligned", "openended_aligned", "bias_aligned", "safety_aligned"):
        assert rows[name]["models"], name
        for used in rows[name]["models"]:
            assert used["device"] == "cpu" and used["dtype"] in ("bfloat16", "bf16", "float32"), (name, used)
            assert (used["dtype"] == "float32") == (used["kind"] == "embedding"), (name, used)  # embedders stay fp32
    assert {u["kind"] for u in rows["align"]["models"]} == {"trainer"} and len(rows["align"]["models"]) == 2
    assert gpu_problems(m)[0] == "the run's device is cpu, not a CUDA GPU"  # what gpu-smoke.sh would say


def test_under_auto_scoring_stays_fp32_on_a_bf16_cpu_and_generation_is_bf16(tmp_path, talking_checkpoint, watch,
                                                                          monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16_capable", lambda: True)
    run_dir = tmp_path / "run"
    assert main(["run", str(TINY), "--run-dir", str(run_dir), "--set", f"model={talking_checkpoint}",
                 "--set", "eval.openended.models=[base]", "--set", "eval.bias.models=[base]", "--set", "report=false",
                 "--only", "eval_base", "openended_base", "bias_base"]) == 0
    rows = {r["name"]: r for r in _manifest(run_dir)["stages"]}
    dtypes = {name: {u["dtype"] for u in rows[name]["models"] if u["kind"] == "transformers"}
              for name in ("eval_base", "openended_base", "bias_base")}
    assert dtypes == {"eval_base": {"float32"}, "openended_base": {"bfloat16"}, "bias_base": {"float32"}}
    # read from disk once, in fp32: the bf16 copy for the open-ended answers is cast in memory
    assert [t for _, _, t in watch.loads] == ["float32"]
    # a precision asked for explicitly holds for scoring too; being another result, the stage reruns
    assert main(["run", str(TINY), "--run-dir", str(run_dir), "--set", f"model={talking_checkpoint}",
                 "--set", "eval.openended.models=[base]", "--set", "eval.bias.models=[base]", "--set", "report=false",
                 "--only", "eval_base", "--precision", "bf16"]) == 0
    eval_base = next(r for r in _manifest(run_dir)["stages"] if r["name"] == "eval_base")
    assert eval_base["status"] == "done" and {u["dtype"] for u in eval_base["models"]} == {"bfloat16"}
    # the recipe's `scoring_precision: auto` (the demo's) scores in bf16 under `auto`, and says so
    assert main(["run", str(TINY), "--run-dir", str(run_dir), "--set", f"model={talking_checkpoint}",
                 "--set", "eval.openended.models=[base]", "--set", "eval.bias.models=[base]", "--set", "report=false",
                 "--only", "eval_base", "bias_base", "--set", "scoring_precision=auto"]) == 0
    manifest = _manifest(run_dir)
    assert manifest["policy"]["score_dtype"] == "bfloat16" and manifest["policy"]["precision"] == "auto"
    rows = {r["name"]: r for r in manifest["stages"]}
    assert {u["dtype"] for name in ("eval_base", "bias_base") for u in rows[name]["models"]} == {"bfloat16"}


def test_the_gpu_plan_names_engine_and_device_per_step_and_refuses_a_big_model_on_the_cpu(shared_data, capsys):
    args = ["run", "aloe-beta-8b", "--dry-run", "--run-dir", "/nonexistent/never-created", "--data-dir", str(shared_data)]
    assert main(args) == 0
    out = capsys.readouterr().out
    plan, stage = {}, None
    for line in out.splitlines():
        if m := re.match(r"^  (\w+)\s+will run ", line):
            stage = m.group(1)
        elif line.strip().startswith("runs on:"):
            plan[stage] = line.strip()
    assert plan["curate"] == "runs on: CoT teacher: vllm TP=8, cuda, bfloat16"
    assert plan["sft"].startswith("runs on: training: accelerate + ZeRO-3 (configs/accelerate/zero3.yaml, 8 processes), cuda")
    assert plan["preferences"] == ("runs on: policy generation: vllm TP=8, cuda, bfloat16; "
                                   "teacher: vllm TP=8, cuda, bfloat16")
    assert plan["eval_aligned"].startswith("runs on: scoring: transformers, cuda, bfloat16; strategies generation: vllm TP=8")
    assert main([*args, "--set", "sft.device=cpu"]) == 1
    assert ("FAIL sft training: meta-llama/Llama-3.1-8B (8.0B parameters) would run on the CPU, but the recipe asks "
            "for cuda") in capsys.readouterr().out


def _leaf_parsers(parser: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaf_parsers(sub, (*path, name))


# A stage's own commands that build a model (a target, teacher, judge, scorer or embedder): each takes
# the policy as `aloe run` does. The others read files only; sft and align take `device`/`bf16` in
# their configs (the trainers' own settings, checked in the first test above).
MODEL_COMMANDS = {("eval",), ("eval-open",), ("eval-bias",), ("curate",), ("preferences",), ("serve",),
                  ("redteam", "run"), ("redteam", "pairs"), ("redteam", "judge-eval"), ("redteam", "judge-fit"),
                  ("redteam", "overrefusal"), ("redteam", "overrefusal-detector-eval"),
                  ("infer", "run"), ("infer", "build-cot-db"), ("infer", "index"), ("infer", "search")}


def test_every_command_that_builds_models_takes_device_and_precision() -> None:
    from aloe.cli import build_parser

    taking = set()
    for path, parser in _leaf_parsers(build_parser()):
        opts = {a.dest: a for a in parser._actions}
        if "device" in opts and path != ("run",):  # `aloe run`'s override the recipe's values
            assert opts["device"].default == "auto" and opts["precision"].default == "auto", path
            assert parser.get_default("policy_args"), path  # activated by aloe.cli.main
            taking.add(path)
    assert taking == MODEL_COMMANDS


def test_a_stage_command_builds_its_models_with_its_device_and_precision(tmp_path, talking_checkpoint, watch,
                                                                         capsys):
    base = ["--model", str(talking_checkpoint), "--benchmarks", "medqa", "--limit", "2", "--mode", "generate",
            "--max-new-tokens", "4", "--no-progress"]
    assert main(["eval", *base, "--out", str(tmp_path / "bf16"), "--device", "cpu", "--precision", "bf16"]) == 0
    assert main(["redteam", "overrefusal", "--model", str(talking_checkpoint), "--n-xstest", "2", "--n-medical", "1",
                 "--max-new-tokens", "4", "--out", str(tmp_path / "over"), "--precision", "bf16"]) == 0
    assert [(d, t) for _, d, t in watch.loads] == [("cpu", "bfloat16"), ("cpu", "bfloat16")]
    assert main(["eval", *base, "--out", str(tmp_path / "fp32"), "--precision", "fp32"]) == 0
    assert watch.loads[-1][1:] == ("cpu", "float32")
    # outside any command the default stays fp32 on the CPU: the policy lasted as long as its command
    assert precision.active_policy() == precision.DEFAULT_POLICY
    capsys.readouterr()
    if not torch.cuda.is_available():
        assert main(["eval", *base, "--out", str(tmp_path / "gpu"), "--device", "cuda"]) == 2
        assert "torch sees no CUDA GPU here" in capsys.readouterr().err
