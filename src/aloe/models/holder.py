"""One loaded model shared by the steps that use it, loaded on first use only.

It sits below the stages: evaluation, open-ended answers, bias probes, strategies and the red-team
target all borrow the same holder from the recipe runner, so a model is read from disk once for a
run of consecutive stages. Its identity is the model and its device. Precision is chosen per use:
under `precision: auto` on a bf16-capable CPU, scoring runs in fp32 and generation in bf16, and the
bf16 copy is cast from the fp32 weights already in memory instead of being read again. The batch
size is a per-call choice too. Generation goes through the run's engine: under vLLM the holder's
in-process weights serve scoring only.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from aloe.models.precision import active_policy, note_model

_BITS = {"float32": 32, "bfloat16": 16, "float16": 16}


class ModelHolder:
    def __init__(self, model: str, dtype: str | None = None, batch_size: int = 8, device: str | None = None):
        """dtype (the precision of the next use) and device: None takes the active policy's scoring
        precision and device."""
        policy = active_policy()
        self.model, self.dtype, self.device = model, dtype or policy.score_dtype, device or policy.device
        self._batch_size = batch_size
        self._lms: dict[str, Any] = {}  # dtype -> HFCausalLM
        self._gens: dict[str, Any] = {}  # dtype -> generator
        self.loads = 0  # reads of the weights from disk: the runner's manifest reports them
        self.casts = 0  # copies cast in memory from weights already read

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.device)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch_size = value
        for lm in self._lms.values():
            lm.batch_size = value

    @property
    def lm(self) -> Any:
        """The model in the current `dtype`."""
        if self.dtype not in self._lms:
            self._lms[self.dtype] = self._cast() or self._load()
        lm = self._lms[self.dtype]
        # noted at every borrow, not only at the load: each stage that reuses the model lists it
        note_model("transformers", self.model, str(lm.device), str(lm.model.dtype).removeprefix("torch."))
        return lm

    def _load(self) -> Any:
        from aloe.models.hf import HFCausalLM

        self.loads += 1
        return HFCausalLM.from_spec(self.model, dtype=self.dtype, device=self.device, batch_size=self._batch_size)

    def _cast(self) -> Any | None:
        """A copy in `dtype` from a loaded copy of at least that precision; casting bf16 weights up to
        fp32 would not give the checkpoint's fp32 weights, so that is a load instead."""
        import torch

        source = next((lm for d, lm in self._lms.items() if _BITS.get(d, 0) >= _BITS.get(self.dtype, 99)), None)
        if source is None:
            return None
        from aloe.models.hf import HFCausalLM

        self.casts += 1
        model = copy.deepcopy(source.model).to(getattr(torch, self.dtype))
        return HFCausalLM(model, source.tokenizer, batch_size=self._batch_size, max_length=source.max_length,
                          share_prefix=source.share_prefix, add_bos_token=source.add_bos_token)

    def generator(self, cache_dir: Path) -> Any:
        """Generation in the current `dtype` behind the completion cache; servers (openai:) and vLLM
        need no weights here."""
        from aloe.models.backends import HFGenerator, generation_backend, generation_identity, get_generator
        from aloe.models.completion_cache import CachedGenerator

        in_process = generation_backend(self.model) == "transformers"
        lm = self.lm if in_process else None  # borrowed at every call, so each stage notes the model
        if self.dtype not in self._gens:
            self._gens[self.dtype] = (
                CachedGenerator(HFGenerator(lm, self.model), cache_dir,
                                identity=generation_identity(self.model, "transformers", self.dtype))
                if in_process else get_generator(self.model, cache_dir=str(cache_dir), dtype=self.dtype))
        return self._gens[self.dtype]
