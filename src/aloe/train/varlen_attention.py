"""`sdpa_varlen`: attention over padding-free packed rows, one causal SDPA call per sample.

TRL's padding-free collator gives one row of concatenated samples plus `cu_seq_lens_q` (the sample
boundaries, as flash-attention's varlen kernels take them). With plain `sdpa`, transformers turns
the restarting position_ids into a block-diagonal mask over the whole row, which is correct but
costs (sum of lengths)^2 per head and, with an explicit mask, rules out SDPA's fused causal kernels.
Here each sample's slice is attended with `is_causal=True`, so the cost is the sum of squared
lengths and the fused kernel runs (on CPU as on GPU). Without boundaries (unpacked or generation
batches) it is exactly transformers' `sdpa`.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "sdpa_varlen"


def sdpa_varlen_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    bounds = cu.tolist()
    out = torch.cat([
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], dropout_p=dropout, scale=scaling, is_causal=True)
        for a, b in zip(bounds[:-1], bounds[1:]) if b > a
    ], dim=2)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register `sdpa_varlen` with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(NAME, sdpa_varlen_attention)
    # Masks are built as for sdpa: used only when a batch carries no sample boundaries.
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return NAME
