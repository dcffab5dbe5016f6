"""Which generation backend serves a model spec: transformers in-process (local folders, the
embedded default, hub ids), any OpenAI-compatible server, or vLLM's offline engine. With a cache
dir the backend is wrapped in `CachedGenerator`, so a completion already paid for is never asked
again.

The engine is a run-wide choice (a recipe's `engine:` section, `aloe serve --engine`): under vLLM,
every model with weights (local folders, including the run's own checkpoints, the embedded default,
hub ids) generates through vLLM; `vllm:` specs always do, `openai:` specs always go to their server.
Log-likelihood scoring never goes through the engine: it needs the logits in-process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aloe.models.generator import GenParams, Generator, Messages, RowHook
from aloe.models.precision import RunScoped, active_policy
from aloe.models.spec import ModelSpec, parse_model_spec

VLLM_ARGS = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "dtype", "enable_prefix_caching")


class Engine(BaseModel):
    """The generation engine and, for vLLM, its engine arguments (None: vLLM's own default; `dtype`
    None: the run's generation precision)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["transformers", "vllm"] = "transformers"
    tensor_parallel_size: int | None = Field(None, ge=1)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=1)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] | None = None
    enable_prefix_caching: bool | None = None

    @model_validator(mode="after")
    def _vllm_args_need_vllm(self) -> Engine:
        stray = [k for k in VLLM_ARGS if getattr(self, k) is not None]
        if self.name != "vllm" and stray:
            raise ValueError(f"{', '.join(stray)}: vLLM engine arguments, but engine name is {self.name!r}")
        return self

    def vllm_args(self, default_dtype: str) -> dict[str, Any]:
        """The arguments for `vllm.LLM(...)` that are set; the dtype, when not, is `default_dtype`."""
        args = {k: getattr(self, k) for k in VLLM_ARGS if getattr(self, k) is not None}
        args.setdefault("dtype", default_dtype)
        return args


_engine = RunScoped(Engine())  # transformers outside a run; read by `get_generator`
active_engine = _engine.get
use_engine = _engine.use


def generation_backend(spec: str | ModelSpec, engine: Engine | None = None) -> Literal["transformers", "vllm", "openai"]:
    """Which backend generates for `spec` under `engine` (default: the active one). A string is read
    by its prefix only, so a checkpoint folder not written yet (a dry run's plan) needs no lookup."""
    kind = spec.kind if isinstance(spec, ModelSpec) else spec.partition(":")[0]
    if kind == "openai":
        return "openai"
    if kind == "vllm":
        return "vllm"
    return (engine or active_engine()).name


class HFGenerator:
    """In-process transformers generation with the model's chat template, batched."""

    def __init__(self, lm: Any, name: str):
        self.lm, self.name = lm, name

    @property
    def tokenizer(self) -> Any:
        return self.lm.tokenizer

    @property
    def context_length(self) -> int:
        return int(self.lm.max_length)

    def count_tokens(self, conversation: Messages) -> int:
        return len(self.lm._encode_many([self.lm.apply_chat_template(list(conversation))])[0])

    def chat(self, conversations: Sequence[Messages], params: GenParams,
             on_done: Callable[[list[int], list[str]], None] | None = None,
             hook: RowHook | None = None) -> list[str]:
        prompts = [self.lm.apply_chat_template(list(c)) for c in conversations]
        return self.lm.generate(prompts, params, on_batch=on_done, hook=hook)


def get_generator(spec: str, cache_dir: str | None = None, *, engine: Engine | None = None,
                  device: str | None = None, dtype: str | None = None, batch_size: int | None = None,
                  **kwargs: Any) -> Generator:
    """A generator for a model spec; with `cache_dir`, wrapped in the on-disk completion cache.

    `engine`, `device` and `dtype` default to the active run's engine and policy (its generation
    precision). `batch_size` is the in-process batch; vLLM and servers batch on their side. Other
    keyword arguments go to the backend (e.g. `OpenAIChat`'s concurrency and retries).
    """
    from aloe.models.loading import resolve_weights

    s = parse_model_spec(spec)
    engine = engine or active_engine()
    backend = generation_backend(s, engine)
    gen: Generator
    if backend == "openai":
        from aloe.models.openai_http import OpenAIChat

        gen = OpenAIChat(s.target, s.served_name or "", **kwargs)
    elif backend == "vllm":
        from aloe.models.vllm_engine import VLLMGenerator

        args = engine.vllm_args(dtype or active_policy().generate_dtype)
        gen = VLLMGenerator(s.target if s.kind == "vllm" else resolve_weights(s), **args, **kwargs)
    else:
        from aloe.models.hf import HFCausalLM

        policy = active_policy()
        lm = HFCausalLM.from_spec(s, dtype=dtype or policy.generate_dtype, device=device or policy.device,
                                  **({"batch_size": batch_size} if batch_size else {}), **kwargs)
        gen = HFGenerator(lm, str(s))
    if cache_dir is not None:
        from aloe.models.completion_cache import CachedGenerator

        precision = None if backend == "openai" else dtype or active_policy().generate_dtype
        gen = CachedGenerator(gen, cache_dir, identity=generation_identity(s, backend, precision))
    return gen


def generation_identity(spec: str | ModelSpec, backend: str, dtype: str | None) -> str:
    """The completion cache's name for a model: its weights, and how they were run when that changes
    the text (bf16 and another engine decode differently), so answers paid for under fp32 are not
    served to a bf16 run. fp32 in-process keeps the bare fingerprint: the caches of earlier runs hold."""
    from aloe.models.loading import weights_fingerprint

    fp = weights_fingerprint(spec)
    if backend == "openai" or (backend == "transformers" and dtype in (None, "float32")):
        return fp
    return f"{fp}|{backend}|{dtype}"
