"""The base model's evaluations are computed once for every run of a recipe: a second run directory
copies them from the result cache (and says where from) until a setting or an input changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aloe.cli import main
from aloe.models.hf import HFCausalLM
from aloe.recipe import runner
from aloe.recipe.schema import load_recipe
from aloe.recipe.stages import Context, base_reuse

TINY = Path(__file__).with_name("tiny.yaml")


def _rows(run_dir: Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads((run_dir / "manifest.json").read_text())["stages"]}


def _run(run_dir: Path, checkpoint: Path, *sets: str) -> dict[str, dict]:
    args = ["run", str(TINY), "--run-dir", str(run_dir), "--set", f"model={checkpoint}", "--set", "report=false",
            "--set", "eval.openended.models=[base]", "--only", "eval_base", "openended_base", *sets]
    assert main(args) == 0
    return _rows(run_dir)


def test_a_second_run_reuses_the_base_evaluation_and_a_changed_setting_recomputes(tmp_path, monkeypatch,
                                                                                 tiny_checkpoint) -> None:
    cache = tmp_path / "results"
    monkeypatch.setenv(runner.RESULT_CACHE_ENV, str(cache))
    first = _run(tmp_path / "one", tiny_checkpoint)
    for name in ("eval_base", "openended_base"):
        assert first[name]["status"] == "done" and "reused" not in first[name]
    loads = first["eval_base"]["model_loads"]
    assert loads["count"] == 1 and loads["seconds"] > 0 and loads["models"] == [str(tiny_checkpoint)]
    assert len(list(cache.iterdir())) == 2  # one entry per stage, each stage's own files only
    assert not list(cache.glob("*/files/openended"))

    def no_loading(*args, **kwargs):
        raise AssertionError("the base model was loaded: its evaluation should have been reused")

    monkeypatch.setattr(HFCausalLM, "from_spec", no_loading)
    second = _run(tmp_path / "two", tiny_checkpoint)
    for name in ("eval_base", "openended_base"):
        row = second[name]
        assert row["status"] == "done" and row["reused"]["from"] == str(tmp_path / "one")
        assert row["reused"]["seconds"] == first[name]["seconds"] and row["summary"] == first[name]["summary"]
        assert row["models"] == first[name]["models"] and row["model_loads"]["count"] == 0
    rel = "eval/base/zero-shot/metrics.json"
    assert (tmp_path / "two" / rel).read_text() == (tmp_path / "one" / rel).read_text()
    assert (tmp_path / "two" / "eval" / "base" / "openended" / "metrics.json").is_file()

    monkeypatch.undo()  # loading allowed again, and the cache is ours again below
    monkeypatch.setenv(runner.RESULT_CACHE_ENV, str(cache))
    third = _run(tmp_path / "three", tiny_checkpoint, "--set", "eval.limit=4")
    assert "reused" not in third["eval_base"] and third["eval_base"]["summary"]["questions"] == 8
    assert third["openended_base"]["reused"]["from"] == str(tmp_path / "one")  # its settings did not change


def test_what_no_key_captures_is_always_computed(tmp_path, monkeypatch, tiny_checkpoint) -> None:
    recipe = load_recipe(TINY, [f"model={tiny_checkpoint}"])
    ctx = Context(recipe, tmp_path)
    key = base_reuse(ctx, "eval")
    assert key is not None and key["weights"][0].startswith(str(tiny_checkpoint))
    served = load_recipe(TINY, [f"model={tiny_checkpoint}", "eval.openended.judge=openai:http://127.0.0.1:9/v1#judge"])
    assert base_reuse(Context(served, tmp_path), "openended") is None  # a served judge: its answers may change
    assert base_reuse(ctx, "openended") is not None and base_reuse(ctx, "safety") is not None
    monkeypatch.setenv(runner.RESULT_CACHE_ENV, "off")
    assert runner.default_result_cache() is None


@pytest.mark.parametrize("changed", ["weights", "data"])
def test_a_changed_input_is_another_key(tmp_path, tiny_checkpoint, changed: str) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    data = tmp_path / "data"
    (data / "medqa").mkdir(parents=True)
    (data / "medqa" / "test.jsonl").write_text("{}\n")
    ctx = Context(load_recipe(TINY, [f"model={model}"]), tmp_path, data)
    before = base_reuse(ctx, "bias")
    touched = next(model.glob("*.safetensors")) if changed == "weights" else data / "medqa" / "test.jsonl"
    touched.write_bytes(touched.read_bytes() + b"\n")
    assert base_reuse(Context(ctx.recipe, tmp_path, data), "bias") != before
