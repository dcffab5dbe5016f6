"""vLLM as an engine, through a fake `vllm` module: a recipe's engine arguments reach `vllm.LLM`,
sampling settings reach `SamplingParams`, the run's own checkpoints generate through it, `aloe serve`
builds it from its flags (and proxies an OpenAI-compatible server), and a missing vLLM names the extra."""

from __future__ import annotations

import http.client
import json
import sys
import threading
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from scripted_openai import ScriptedOpenAIServer

from aloe.models import loading
from aloe.models.backends import Engine, get_generator, use_engine
from aloe.models.completion_cache import CachedGenerator
from aloe.models.generator import GenParams
from aloe.models.precision import resolve_policy, take_noted_models, use_policy
from aloe.models.vllm_engine import VLLMGenerator
from aloe.recipe.schema import PACKAGED_RECIPES, load_recipe

TINY = Path(__file__).resolve().parents[1] / "recipe" / "tiny.yaml"
ENGINE_8B = {"tensor_parallel_size": 8, "gpu_memory_utilization": 0.9, "max_model_len": 8192, "dtype": "bfloat16",
             "enable_prefix_caching": True}


class FakeLLM:
    made: list[FakeLLM] = []

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs
        self.calls: list[tuple[list[Any], Any, bool]] = []
        FakeLLM.made.append(self)

    def chat(self, messages: list[Any], sampling_params: Any, use_tqdm: bool = True) -> list[Any]:
        self.calls.append((messages, sampling_params, use_tqdm))
        return [SimpleNamespace(outputs=[SimpleNamespace(text=f"{self.kwargs['model']} #{i}")])
                for i in range(len(messages))]


class FakeSamplingParams:
    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs


@pytest.fixture()
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> type[FakeLLM]:
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams  # type: ignore[attr-defined]
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = SimpleNamespace(device_type="cuda")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    FakeLLM.made = []

    def no_transformers(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("generation went to transformers, not vLLM")

    monkeypatch.setattr(loading, "load_causal_lm", no_transformers)
    monkeypatch.setattr("aloe.models.hf.load_causal_lm", no_transformers)
    return FakeLLM


def test_the_8b_recipes_engine_arguments_reach_vllm(fake_vllm) -> None:
    recipe = load_recipe(PACKAGED_RECIPES / "aloe-beta-8b.yaml")
    assert recipe.engine.name == "vllm" and (recipe.device, recipe.precision) == ("cuda", "bf16")
    gen = get_generator("meta-llama/Llama-3.1-70B-Instruct", engine=recipe.engine)
    assert isinstance(gen, VLLMGenerator)
    assert fake_vllm.made[0].kwargs == {"model": "meta-llama/Llama-3.1-70B-Instruct", "seed": 0, **ENGINE_8B}


def test_sampling_settings_reach_sampling_params_and_results_come_back(fake_vllm) -> None:
    gen = get_generator("org/model", engine=Engine(name="vllm"))
    done: list[tuple[list[int], list[str]]] = []
    params = GenParams(max_new_tokens=7, temperature=0.5, top_p=0.9, stop=["\n\n"], seed=3)
    texts = gen.chat([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]], params,
                     on_done=lambda i, t: done.append((i, t)))
    assert texts == ["org/model #0", "org/model #1"] and done == [([0, 1], texts)]
    messages, sp, _ = fake_vllm.made[0].calls[0]
    assert messages == [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    assert sp.kwargs == {"max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "stop": ["\n\n"], "seed": 3}
    gen.chat([[{"role": "user", "content": "c"}]], GenParams())
    assert fake_vllm.made[0].calls[1][1].kwargs["stop"] is None  # vLLM's "no stop strings"


def test_dtype_follows_the_policy_unless_the_engine_sets_it(fake_vllm) -> None:
    with use_policy(resolve_policy("cpu", "fp32")):
        get_generator("org/a", engine=Engine(name="vllm"))
        get_generator("org/b", engine=Engine(name="vllm", dtype="float16"))
        get_generator("vllm:org/c")  # a vllm: spec under the default engine: vLLM's own defaults
    assert [m.kwargs for m in fake_vllm.made] == [
        {"model": "org/a", "seed": 0, "dtype": "float32"}, {"model": "org/b", "seed": 0, "dtype": "float16"},
        {"model": "org/c", "seed": 0, "dtype": "float32"}]
    assert ("vllm", "org/a", "cuda", "float32") in {tuple(m.values()) for m in take_noted_models()}


def test_the_runs_own_checkpoints_and_teachers_generate_through_vllm(fake_vllm, tmp_path) -> None:
    """What a run does: an SFT checkpoint written by the run, the CoT teacher and the preference
    policy all go through the engine with the recipe's arguments; nothing loads in-process."""
    from aloe.curate.cot import teacher_generator
    from aloe.recipe.stages import Context, _generator

    recipe = load_recipe(TINY, ["engine.name=vllm", "engine.tensor_parallel_size=2", "engine.max_model_len=4096",
                                "curate.cot.teacher=org/teacher", "device=cpu", "precision=bf16"])
    ctx = Context(recipe, tmp_path / "run")
    final = Path(ctx.model("sft"))
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    with use_policy(ctx.policy), use_engine(recipe.engine):
        target = _generator(ctx, "sft", None, 4)
        teacher = teacher_generator(recipe.curate.cot, tmp_path / "cache")
        assert target.chat([[{"role": "user", "content": "hi"}]], GenParams()) == [f"{final} #0"]
    assert isinstance(target, CachedGenerator) and isinstance(target.inner, VLLMGenerator)
    assert isinstance(teacher.inner, VLLMGenerator)
    expected = {"seed": 0, "tensor_parallel_size": 2, "max_model_len": 4096, "dtype": "bfloat16"}
    assert [m.kwargs for m in fake_vllm.made] == [{"model": str(final), **expected},
                                                  {"model": "org/teacher", **expected}]


def _serve_args(*flags: str) -> Any:
    from aloe.cli import build_parser

    return build_parser().parse_args(["serve", *flags])


def test_serve_builds_vllm_from_its_flags(fake_vllm) -> None:
    from aloe.models.precision import command_policy
    from aloe.serve.cli import build_generator

    args = _serve_args("--model", "org/model", "--engine", "vllm", "--tensor-parallel-size", "4",
                       "--gpu-memory-utilization", "0.8", "--max-model-len", "2048",
                       "--enable-prefix-caching", "--device", "cpu", "--precision", "bf16")
    with command_policy(args):  # as `aloe.cli.main` runs every command
        gen = build_generator(args)
    assert isinstance(gen, VLLMGenerator)
    assert fake_vllm.made[0].kwargs == {"model": "org/model", "seed": 0, "tensor_parallel_size": 4,
                                        "gpu_memory_utilization": 0.8, "max_model_len": 2048,
                                        "enable_prefix_caching": True, "dtype": "bfloat16"}
    with pytest.raises(ValueError, match="vLLM engine arguments, but engine name is 'transformers'"):
        build_generator(_serve_args("--model", "org/model", "--tensor-parallel-size", "2"))


def test_serve_proxies_an_openai_compatible_server() -> None:
    """`aloe serve --model openai:URL#name` in front of a running server (e.g. `vllm serve`)."""
    from aloe.serve.app import AloeServer, ServeConfig
    from aloe.serve.cli import build_generator

    upstream = ScriptedOpenAIServer(lambda body: f"upstream {body['model']}: {body['messages'][-1]['content']}")
    srv = AloeServer(("127.0.0.1", 0), ServeConfig(model_name="proxy", batch_window_s=0.01),
                     build_generator(_serve_args("--model", upstream.spec("big"))), None)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=60)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(
            {"model": "proxy", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}),
            headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)
        upstream.close()
    assert resp.status == 200, body
    assert body["choices"][0]["message"]["content"] == "upstream big: hello"
    assert upstream.requests[0]["max_tokens"] == 8


def test_without_vllm_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed: `import vllm` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'aloe\[vllm\]'"):
        get_generator("org/model", engine=Engine(name="vllm"))
