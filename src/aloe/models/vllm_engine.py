"""vLLM's offline engine for GPU machines; imported only when a model generates through vLLM (a
`vllm:` spec, or any model with weights under `engine: {name: vllm}`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aloe.models.generator import GenParams, Messages
from aloe.models.precision import note_model

VLLM_MISSING = ("generation through vLLM needs vLLM, which is not installed here: "
                "pip install 'aloe[vllm]' (on a CUDA machine)")
# Sampling is seeded per request (SamplingParams.seed, from each step's settings); the engine's own
# seed only covers what is left unseeded, and stays fixed so that runs repeat.
ENGINE_SEED = 0


def _vllm_device() -> str:
    try:
        from vllm.platforms import current_platform

        return str(current_platform.device_type)
    except (ImportError, AttributeError):  # bookkeeping only: a moved vLLM internal must not stop a run
        return "unknown"


class VLLMGenerator:
    def __init__(self, model: str, **engine_args: Any):
        """`engine_args` go to `vllm.LLM` as they are (`aloe.models.backends.Engine.vllm_args`)."""
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError(VLLM_MISSING) from e
        self.llm = LLM(model=model, seed=ENGINE_SEED, **engine_args)
        self.name = f"vllm:{model}"
        self._record = ("vllm", model, _vllm_device(), str(engine_args.get("dtype", "auto")))
        note_model(*self._record)

    def chat(self, conversations: Sequence[Messages], params: GenParams,
             on_done: Callable[[list[int], list[str]], None] | None = None) -> list[str]:
        from vllm import SamplingParams

        sp = SamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature,
                            top_p=params.top_p, stop=params.stop or None, seed=params.seed)
        note_model(*self._record)  # per call: the manifest lists it under every stage that generates with it
        results = self.llm.chat([list(c) for c in conversations], sp, use_tqdm=True)
        texts = [r.outputs[0].text for r in results]
        if on_done is not None:
            on_done(list(range(len(texts))), texts)
        return texts
