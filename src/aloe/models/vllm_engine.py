"""vLLM's offline engine for GPU machines; imported only when a `vllm:` spec is used."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aloe.models.generator import GenParams, Messages


class VLLMGenerator:
    def __init__(self, model: str, **engine_kwargs: Any):
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("a vllm: model spec needs vLLM installed (pip install vllm) on a GPU machine") from e
        self.llm = LLM(model=model, **engine_kwargs)
        self.name = f"vllm:{model}"

    def chat(self, conversations: Sequence[Messages], params: GenParams,
             on_done: Callable[[list[int], list[str]], None] | None = None) -> list[str]:
        from vllm import SamplingParams

        sp = SamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature,
                            top_p=params.top_p, stop=params.stop or None, seed=params.seed)
        results = self.llm.chat([list(c) for c in conversations], sp, use_tqdm=True)
        texts = [r.outputs[0].text for r in results]
        if on_done is not None:
            on_done(list(range(len(texts))), texts)
        return texts
