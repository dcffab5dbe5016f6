"""CPU fixes for TRL 1.16's fused LM head (DPO and SFT), measured in benchmarks/dpo_speed.py and sft_speed.py.

TRL scores every position (prompt, padding and completion tokens alike) through the vocabulary on
devices without Triton, so that Neuron sees one tile shape per batch, and folds each vocabulary tile
with about ten elementwise passes written for a GPU kernel. On a CPU that made the LM head about
half of a DPO step for SmolLM2 (49k vocabulary). `cpu_lm_head()` makes the head score only the
completion positions (those with a label, as TRL does on CUDA) with one plain matmul, log-softmax
and gather, whose backward autograd derives; the per-token values are identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class _PlainLogProbs:
    """`ChunkedLogProbFunction.apply`'s signature and outputs, as plain differentiable torch ops.
    The [tokens, vocab] logits are materialised; on a CPU, with only completion tokens, that is a
    few hundred MB at most for the batch sizes CPUs train with."""

    @staticmethod
    def apply(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
              temperature: float, chunk_size: int, softcap: float | None = None, logit_scale: float = 1.0,
              outputs: tuple[str, ...] = ()) -> tuple[torch.Tensor | None, ...]:
        z = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
        if softcap is not None:
            z = softcap * torch.tanh(z / softcap)
        z = z / temperature
        log_p = torch.log_softmax(z, dim=-1)
        log_probs = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():  # these are logged, never differentiated, in TRL's DPO
            entropy = -(log_p.exp() * log_p).sum(-1) if "entropy" in outputs else None
            log_sum_sq = torch.logsumexp(2 * log_p, dim=-1) if "log_sum_sq_probs" in outputs else None
            mean_logits = z.mean(-1) if "mean_logits" in outputs else None
            is_top1 = (z.argmax(-1) == targets) if "is_top1" in outputs else None
        return log_probs, entropy, log_sum_sq, mean_logits, is_top1


@contextmanager
def cpu_lm_head(device: torch.device | str) -> Iterator[None]:
    """Within the block, TRL's fused LM head on `device` (when it is a CPU) scores only labelled
    positions with `_PlainLogProbs`; elsewhere nothing changes."""
    import trl.trainer.utils as tu

    if torch.device(device).type != "cpu":
        yield
        return
    saved: dict[str, Any] = {"_use_triton": tu._use_triton, "_ChunkedLogProbFunction": tu._ChunkedLogProbFunction}
    # `_use_triton` in trl.trainer.utils only decides whether positions are compacted to the labelled ones
    tu._use_triton = lambda dev: dev.type == "cpu" or saved["_use_triton"](dev)
    tu._ChunkedLogProbFunction = _PlainLogProbs
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(tu, k, v)

