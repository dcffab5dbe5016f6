"""DPO with one copy of each pair's prompt: chosen and rejected share a row.

TRL's DPOTrainer runs the policy and the reference on a batch of 2B rows, [prompt + chosen_i] then
[prompt + rejected_i], each right-padded to the longest. The prompt is the same in both rows of a
pair, and with red-team pairs (jailbreak templates of a few hundred tokens, answers of fifty) it is
most of the tokens. `shared_prompt_pairs()` makes the backbone run row i and row B+i as one row,

    [chosen row (all of it)] [rejected row after their common prefix]

with position ids restarting at the end of the common prefix for the second part and an attention
mask that lets the rejected tokens see the common prefix and themselves, never the chosen tokens.
Every position then has exactly the context, the position and so the hidden state it had in its own
row, and those are scattered back to the 2B-row layout TRL expects: the loss, gradients and logged
metrics are TRL's, computed on fewer tokens (`benchmarks/dpo_speed.py` measures it).
The rewrite applies to any even batch of right-padded rows; rows with no common prefix gain nothing
and lose nothing. It needs an attention that takes a 4D mask (sdpa, eager); others run unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

MASKED_ATTENTION = ("sdpa", "eager")


def pair_layout(input_ids: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """The packed rows of an even batch [first half; second half] of right-padded rows.

    Returns `input_ids` and `position_ids` [B, L], `allowed` [B, L, L] (query attends key), and
    `gather` [2B, T]: for each original row and position, the packed position holding its state.
    """
    n2, t = input_ids.shape
    b = n2 // 2
    dev = input_ids.device
    la, lb = lengths[:b], lengths[b:]
    pos = torch.arange(t, device=dev)
    same = (input_ids[:b] == input_ids[b:]) & (pos < la[:, None]) & (pos < lb[:, None])
    shared = same.int().cumprod(1).sum(1)  # common-prefix length of each pair
    packed_len = la + lb - shared
    width = int(packed_len.max())
    q = torch.arange(width, device=dev)
    in_a = q[None] < la[:, None]
    in_b = (q[None] >= la[:, None]) & (q[None] < packed_len[:, None])
    src_b = (q[None] - la[:, None] + shared[:, None]).clamp(0, t - 1)  # rejected-row position held at q
    ids = torch.where(in_a, input_ids[:b].gather(1, q[None].expand(b, -1).clamp(max=t - 1)),
                      input_ids[b:].gather(1, src_b))
    ids = torch.where(in_a | in_b, ids, torch.zeros_like(ids))
    positions = torch.where(in_a, q[None].expand(b, -1), torch.where(in_b, src_b, torch.zeros_like(src_b)))
    causal = q[None, :, None] >= q[None, None, :]
    allowed = causal & (
        (in_a[:, :, None] & in_a[:, None, :])
        | (in_b[:, :, None] & in_b[:, None, :])
        | (in_b[:, :, None] & (q[None, None, :] < shared[:, None, None]))
    )
    pad = ~(in_a | in_b)
    allowed |= pad[:, :, None] & torch.eye(width, dtype=torch.bool, device=dev)[None]  # no empty softmax rows
    gather_a = pos[None].expand(b, -1).clamp(max=width - 1)
    gather_b = torch.where(pos[None] < shared[:, None], pos[None], la[:, None] + pos[None] - shared[:, None])
    gather = torch.cat([gather_a, gather_b.clamp(0, width - 1)])
    return {"input_ids": ids, "position_ids": positions, "allowed": allowed, "gather": gather}


def _shared_forward(original: Callable[..., Any]) -> Callable[..., Any]:
    def forward(self: Any, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                **kwargs: Any) -> Any:
        plain = (input_ids is None or attention_mask is None or attention_mask.dim() != 2
                 or input_ids.shape[0] % 2 or kwargs.get("position_ids") is not None
                 or kwargs.get("past_key_values") is not None or kwargs.get("cache") is not None
                 or kwargs.get("inputs_embeds") is not None
                 or kwargs.get("output_router_logits"))
        if not plain:
            lengths = attention_mask.sum(1)
            right_padded = bool((attention_mask == (torch.arange(attention_mask.shape[1], device=lengths.device)
                                                    < lengths[:, None])).all())
            plain = not right_padded
        if plain:
            return original(self, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        lay = pair_layout(input_ids, lengths)
        mask = lay["allowed"][:, None]
        if self.config._attn_implementation == "eager":  # eager adds the mask to the scores
            dtype = next(self.parameters()).dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
        out = original(self, input_ids=lay["input_ids"], attention_mask=mask, position_ids=lay["position_ids"],
                       **kwargs)
        hidden = out.last_hidden_state
        b = hidden.shape[0]
        rows = hidden[torch.arange(2 * b, device=hidden.device) % b]
        out.last_hidden_state = rows.gather(1, lay["gather"][:, :, None].expand(-1, -1, hidden.shape[-1]))
        return out

    return forward


@contextmanager
def shared_prompt_pairs(model: Any) -> Iterator[None]:
    """Within the block, backbones of `model`'s class run pair batches prompt-shared (see above);
    the reference model TRL builds inside the block is of the same class and shares the rewrite."""
    backbone = model.base_model
    if model.config._attn_implementation not in MASKED_ATTENTION:
        yield
        return
    cls = type(backbone)
    original = cls.forward
    cls.forward = _shared_forward(original)
    try:
        yield
    finally:
        cls.forward = original
