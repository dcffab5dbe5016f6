"""The prompt-shared DPO forward must give TRL's per-token log-probs and gradients exactly."""

from __future__ import annotations

import pytest
import torch

from aloe.train.shared_prompt import pair_layout, shared_prompt_pairs


def _pair_batch(rows: list[list[int]], labelled_from: list[int]) -> tuple[torch.Tensor, ...]:
    """Right-padded [2B, T] ids, attention mask and labels, as TRL's DPO collator makes them."""
    t = max(map(len, rows))
    ids = torch.zeros((len(rows), t), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (r, start) in enumerate(zip(rows, labelled_from, strict=True)):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
        labels[i, start:len(r)] = ids[i, start:len(r)]
    return ids, mask, labels


def _cases() -> tuple[list[list[int]], list[int]]:
    g = torch.Generator().manual_seed(0)

    def rand(n: int) -> list[int]:
        return torch.randint(3, 400, (n,), generator=g).tolist()

    prompts = [rand(9), rand(4), rand(6), rand(5)]
    chosen = [rand(5), rand(7), rand(3), rand(2)]
    rejected = [rand(3), rand(2), rand(6), None]
    # pair 2: the answers start alike (a longer common prefix); pair 3: the rejected answer is a
    # prefix of the chosen one (nothing of its own after the common part)
    rejected[2] = chosen[2][:2] + rejected[2]
    rejected[3] = chosen[3][:1]
    rows = [p + c for p, c in zip(prompts, chosen, strict=True)] + \
           [p + r for p, r in zip(prompts, rejected, strict=True)]
    return rows, [len(p) for p in prompts] * 2


def test_pair_layout_shares_the_common_prefix_only():
    rows, starts = _cases()
    ids, mask, _ = _pair_batch(rows, starts)
    lay = pair_layout(ids, mask.sum(1))
    b = len(rows) // 2
    for i in range(b):
        a, r = rows[i], rows[b + i]
        shared = next((k for k, (x, y) in enumerate(zip(a, r)) if x != y), min(len(a), len(r)))
        n = len(a) + len(r) - shared
        assert lay["input_ids"][i, :n].tolist() == a + r[shared:]
        assert lay["position_ids"][i, :n].tolist() == list(range(len(a))) + list(range(shared, len(r)))
        allowed = lay["allowed"][i]
        for q in range(len(a), n):  # rejected tokens: the common prefix and themselves, never chosen tokens
            assert allowed[q, :n].tolist() == [k < shared or len(a) <= k <= q for k in range(n)]
        assert [lay["input_ids"][i, j] for j in lay["gather"][b + i, :len(r)]] == r
        assert [lay["input_ids"][i, j] for j in lay["gather"][i, :len(a)]] == a


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prompt_forward_gives_trl_log_probs_and_gradients(tiny_ckpt, attn):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_ckpt, attn_implementation=attn)
    add_fused_lm_head(model)
    rows, starts = _cases()
    ids, mask, labels = _pair_batch(rows, starts)
    seen: list[torch.Size] = []
    model.model.embed_tokens.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        return out.log_probs.detach(), [p.grad.clone() for p in model.parameters()]

    plain, g_plain = run()
    with shared_prompt_pairs(model):
        shared, g_shared = run()
    assert seen[0] == ids.shape and seen[1][0] == ids.shape[0] // 2  # the rewrite ran, on half the rows
    assert seen[1][1] < ids.shape[1] * 2
    torch.testing.assert_close(shared, plain, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_shared, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)
    # the block restores the class's own forward
    seen.clear()
    model(input_ids=ids, attention_mask=mask)
    assert seen == [ids.shape]


def test_shared_prompt_leaves_left_padded_and_odd_batches_alone(tiny_ckpt):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_ckpt)
    ids = torch.randint(3, 400, (3, 6), generator=torch.Generator().manual_seed(1))
    left = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        ref = [model(input_ids=ids, attention_mask=left).logits, model(input_ids=ids[:2], attention_mask=left[:2]).logits]
        with shared_prompt_pairs(model):
            got = [model(input_ids=ids, attention_mask=left).logits,
                   model(input_ids=ids[:2], attention_mask=left[:2]).logits]
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b)
