"""The transformers backend: log-likelihood scoring and batched generation on a causal LM.

Log-likelihoods follow lm-evaluation-harness exactly (trailing spaces of the context move to the
continuation; the continuation's tokens are those of `context + continuation` after the context's
tokens), so scores are comparable with published lm-eval numbers.

What differs is how the work is laid out. lm-eval runs one full forward pass per
(context, continuation) pair. Here every request that shares a context becomes one packed row:
the context once, then each continuation's tokens, with a 4D attention mask that lets each
continuation see the context and its own earlier tokens only, and position ids that restart after
the context for every continuation. One forward pass scores all options of a question, and the
vocabulary projection runs only at the positions whose next token is scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from aloe.models.generator import GenParams
from aloe.models.loading import load_causal_lm
from aloe.models.spec import ModelSpec


@dataclass
class _Group:
    """All requests that share one context: the context's tokens and each continuation's tokens."""

    context: list[int]
    continuations: list[list[int]]
    request_ids: list[int]

    @property
    def packed_len(self) -> int:
        # The last context token predicts every continuation's first token, so a continuation of
        # n tokens adds only n - 1 positions to the row.
        return len(self.context) + sum(len(c) - 1 for c in self.continuations)


class HFCausalLM:
    """A transformers causal LM behind aloe's three-method interface.

    `batch_size` counts sequences per forward pass, as lm-eval's does; with packing, one sequence
    holds all the options of one question.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 8,
        max_length: int | None = None,
        share_prefix: bool = True,
        add_bos_token: bool = False,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.add_bos_token = add_bos_token
        self.max_length = max_length or min(
            getattr(model.config, "max_position_embeddings", 2048) or 2048, 8192
        )
        self.device = next(model.parameters()).device

    @classmethod
    def from_spec(cls, spec: str | ModelSpec, dtype: str = "float32", device: str = "cpu",
                  trust_remote_code: bool = False, **kwargs: Any) -> HFCausalLM:
        model, tokenizer = load_causal_lm(spec, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, **kwargs)

    # -- tokenization ---------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        if not self.has_chat_template:
            raise ValueError("this model's tokenizer has no chat template; run without --chat-template")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        if self.add_bos_token and self.tokenizer.bos_token_id is not None:
            bos = self.tokenizer.bos_token_id
            ids = [i if i[:1] == [bos] else [bos, *i] for i in ids]
        return ids

    @property
    def _prefix_token_id(self) -> int:
        tid = self.tokenizer.bos_token_id
        return tid if tid is not None else self.tokenizer.eos_token_id

    def _encode_pairs(self, requests: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """lm-eval's `_encode_pair`, vectorised over the tokenizer."""
        contexts, wholes = [], []
        for ctx, cont in requests:
            n_spaces = len(ctx) - len(ctx.rstrip())
            if n_spaces:
                ctx, cont = ctx[:-n_spaces], ctx[-n_spaces:] + cont
            contexts.append(ctx)
            wholes.append(ctx + cont)
        nonempty = [i for i, c in enumerate(contexts) if c]
        ctx_ids = dict(zip(nonempty, self._encode_many([contexts[i] for i in nonempty]), strict=True))
        whole_ids = self._encode_many(wholes)
        out = []
        for i, whole in enumerate(whole_ids):
            if i in ctx_ids:
                c = ctx_ids[i]
                out.append((c, whole[len(c):]))
            else:  # empty context: condition on the BOS (or EOS) token, as lm-eval does
                out.append(([self._prefix_token_id], whole))
        for (ctx, cont), (c_ids, k_ids) in zip(requests, out, strict=True):
            if not k_ids:
                raise ValueError(f"continuation {cont!r} after context ending {ctx[-40:]!r} encodes to no tokens")
        return out

    # -- log-likelihood -------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[tuple[str, str]], progress: bool = True,
                      desc: str = "loglikelihood") -> list[tuple[float, bool]]:
        """For each (context, continuation): (sum of log-probs of the continuation, is it greedy)."""
        encoded = self._encode_pairs(requests)
        groups: dict[tuple[int, ...], _Group] = {}
        if self.share_prefix:
            for rid, (ctx, cont) in enumerate(encoded):
                g = groups.setdefault(tuple(ctx), _Group(ctx, [], []))
                g.continuations.append(cont)
                g.request_ids.append(rid)
            todo = list(groups.values())
        else:
            todo = [_Group(ctx, [cont], [rid]) for rid, (ctx, cont) in enumerate(encoded)]
        for g in todo:
            self._truncate(g)
        # Longest first, as lm-eval does: batches hold rows of similar length (little padding) and
        # an out-of-memory error shows up at once rather than at the end.
        todo.sort(key=lambda g: -g.packed_len)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc=desc, disable=not progress, leave=False)
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            for g, scores in zip(batch, self._score_packed(batch), strict=True):
                for rid, s in zip(g.request_ids, scores, strict=True):
                    results[rid] = s
            bar.update(sum(len(g.request_ids) for g in batch))
        bar.close()
        return results  # type: ignore[return-value]

    def _truncate(self, g: _Group) -> None:
        """Drop context tokens from the left so the longest continuation still fits."""
        excess = len(g.context) + max(len(c) for c in g.continuations) - 1 - self.max_length
        if excess > 0:
            if excess >= len(g.context):
                raise ValueError(f"a continuation of {max(map(len, g.continuations))} tokens does not fit "
                                 f"in the model's {self.max_length}-token window")
            g.context = g.context[excess:]

    @torch.inference_mode()
    def _score_packed(self, batch: list[_Group]) -> list[list[tuple[float, bool]]]:
        rows = len(batch)
        width = max(g.packed_len for g in batch)
        input_ids = torch.full((rows, width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        position_ids = torch.zeros((rows, width), dtype=torch.long)
        allowed = torch.zeros((rows, width, width), dtype=torch.bool)
        keep = torch.zeros((rows, width), dtype=torch.bool)
        # For each scored token: (row, position whose logits predict it, token id)
        targets: list[list[list[tuple[int, int]]]] = []
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        for r, g in enumerate(batch):
            n_ctx = len(g.context)
            input_ids[r, :n_ctx] = torch.tensor(g.context)
            position_ids[r, :n_ctx] = torch.arange(n_ctx)
            allowed[r, :n_ctx, :n_ctx] = causal[:n_ctx, :n_ctx]
            keep[r, n_ctx - 1] = True
            row_targets = []
            pos = n_ctx
            for cont in g.continuations:
                seg = len(cont) - 1
                tgt = [(n_ctx - 1, cont[0])]
                if seg:
                    input_ids[r, pos:pos + seg] = torch.tensor(cont[:-1])
                    position_ids[r, pos:pos + seg] = torch.arange(n_ctx, n_ctx + seg)
                    allowed[r, pos:pos + seg, :n_ctx] = True
                    allowed[r, pos:pos + seg, pos:pos + seg] = causal[:seg, :seg]
                    keep[r, pos:pos + seg] = True
                    tgt += [(pos + k, cont[k + 1]) for k in range(seg)]
                    pos += seg
                row_targets.append(tgt)
            targets.append(row_targets)
        # Padding positions attend to themselves so no softmax row is empty.
        pad = ~allowed.any(-1)
        allowed |= pad.unsqueeze(-1) & torch.eye(width, dtype=torch.bool)
        dtype = self.model.dtype
        mask = torch.zeros((rows, 1, width, width), dtype=dtype)
        mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)
        out = self.model(
            input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
            position_ids=position_ids.to(self.device), logits_to_keep=keep.to(self.device), use_cache=False,
        )
        # logits come flattened over the kept positions, row by row, in position order
        logprobs = torch.log_softmax(out.logits.reshape(-1, out.logits.shape[-1]).float(), dim=-1)
        kept_index = torch.full((rows, width), -1, dtype=torch.long)
        kept_index[keep] = torch.arange(int(keep.sum()))
        greedy = logprobs.argmax(-1)
        results = []
        for r, row_targets in enumerate(targets):
            row = []
            for tgt in row_targets:
                idx = kept_index[r, [p for p, _ in tgt]]
                toks = torch.tensor([t for _, t in tgt])
                lp = logprobs[idx, toks]
                row.append((float(lp.sum()), bool((greedy[idx] == toks).all())))
            results.append(row)
        return results

    def loglikelihood_rolling(self, texts: Sequence[str], progress: bool = True) -> list[float]:
        """Log-likelihood of whole texts (each conditioned on the BOS/EOS token), for perplexity."""
        return [lp for lp, _ in self.loglikelihood([("", t) for t in texts], progress=progress,
                                                   desc="loglikelihood_rolling")]

    # -- generation -----------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], params: GenParams | None = None, progress: bool = True,
                 on_batch: Callable[[list[int], list[str]], None] | None = None) -> list[str]:
        """Complete each prompt; batches of similar length, left-padded.

        `on_batch(indices, texts)` is called as each batch finishes, so callers can persist results
        as they come (a crash then loses at most one batch).
        """
        p = params or GenParams()
        enc = self._encode_many(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(enc[i]))
        outputs: list[str] = [""] * len(prompts)
        pad_id = self.tokenizer.pad_token_id
        bar = tqdm(total=len(prompts), desc="generate", disable=not progress, leave=False)
        gen_kwargs: dict[str, Any] = {"max_new_tokens": p.max_new_tokens, "pad_token_id": pad_id}
        if p.temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=p.temperature, top_p=p.top_p)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if p.stop:
            gen_kwargs.update(stop_strings=p.stop, tokenizer=self.tokenizer)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            seqs = [enc[i][-(self.max_length - p.max_new_tokens):] for i in idx]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
            attn = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, width - len(s):] = torch.tensor(s)
                attn[r, width - len(s):] = 1
            torch.manual_seed(p.seed + start)
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=attn.to(self.device), **gen_kwargs)
            texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            texts = [_cut_at_stop(t, p.stop) for t in texts]
            for i, t in zip(idx, texts, strict=True):
                outputs[i] = t
            if on_batch is not None:
                on_batch(idx, texts)
            bar.update(len(idx))
        bar.close()
        return outputs


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((i for s in stops if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]
