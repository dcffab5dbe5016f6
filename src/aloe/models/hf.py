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

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from aloe.models.generator import GenParams, RowHook
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
    def from_spec(cls, spec: str | ModelSpec, dtype: str | None = None, device: str | None = None,
                  trust_remote_code: bool = False, **kwargs: Any) -> HFCausalLM:
        """dtype and device: None takes the active policy's (see `load_causal_lm`)."""
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
                 on_batch: Callable[[list[int], list[str]], None] | None = None,
                 hook: RowHook | None = None) -> list[str]:
        """Complete each prompt with continuous batching.

        Up to `batch_size` rows decode together; a row leaves the batch (and its KV cache) the step
        it ends, and the next queued prompt takes its slot, so no step is spent on finished rows or
        waiting for the slowest one. Prompts that share a prefix (the shuffled samples of one
        question share all but the last turn) are queued next to each other and reuse the
        previous prompt's prefix KV, so only their differing tail is prefilled. Greedy output is
        that of `model.generate` on each prompt alone; sampling draws from a generator seeded by
        (seed, prompt), so a prompt's sample does not depend on what else is in the call.

        `on_batch(indices, texts)` is called as rows finish, so callers can persist results as they
        come (a crash loses only the rows still decoding). `hook` sees each row start, grow and end,
        and can stop it between decode steps: a stopped row's result, here and in `on_batch`, is the
        text it had (empty if it had not started).
        """
        p = params or GenParams()
        budget = self.max_length - p.max_new_tokens
        if budget < 1:
            raise ValueError(f"max_new_tokens={p.max_new_tokens} leaves no room for the prompt in the "
                             f"model's {self.max_length}-token window")
        enc = [ids[-budget:] for ids in self._encode_many(prompts)]
        outputs: list[str] = [""] * len(prompts)
        bar = tqdm(total=len(prompts), desc="generate", disable=not progress, leave=False)

        def finish(rows: list[_Row]) -> None:
            texts = [_cut_at_stop(self.tokenizer.decode(r.tokens, skip_special_tokens=True), p.stop) for r in rows]
            for r, t in zip(rows, texts, strict=True):
                outputs[r.index] = t
                if hook is not None:
                    hook.end(r.index, t, r.tokens, r.finish_reason)
            if on_batch is not None:
                on_batch([r.index for r in rows], texts)
            bar.update(len(rows))

        _Decoder(self, p, hook).run([_Row(i, enc[i]) for i in _prefix_grouped_order(enc)], finish)
        bar.close()
        return outputs


@dataclass
class _Row:
    """One prompt being completed: its tokens so far and its own sampling generator."""

    index: int
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    rng: torch.Generator | None = None
    finish_reason: str = ""  # once ended: "stop", "length" or "cancelled" (see RowHook.end)


class _Decoder:
    """The continuous-batching loop behind `HFCausalLM.generate` (see its docstring)."""

    def __init__(self, lm: HFCausalLM, params: GenParams, hook: RowHook | None = None):
        self.lm, self.model, self.p, self.device, self.hook = lm, lm.model, params, lm.device, hook
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = lm.tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) - {None}
        # Rows of a hybrid cache (sliding-window layers) cannot be padded and stacked by hand:
        # such models decode one row at a time, still stopping each row at its own end.
        self.plain = all(type(layer) is DynamicLayer for layer in DynamicCache(config=self.model.config).layers)
        self.slots = lm.batch_size if self.plain else 1
        self._last: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def run(self, queue: list[_Row], finish: Callable[[list[_Row]], None]) -> None:
        queue.reverse()  # pop() from the end takes rows in order
        # Every row's KV lives in its slot of one preallocated store, written where the row ends:
        # admitting or retiring a row copies nothing else (a stacked cache would be re-padded
        # and copied whole at each change of the batch, as often as rows finish).
        capacity = max((len(r.prompt) for r in queue), default=0) + self.p.max_new_tokens
        slots: list[_Row | None] = [None] * self.slots
        lens = torch.zeros(self.slots, dtype=torch.long, device=self.device)
        store: list[tuple[torch.Tensor, torch.Tensor]] = []
        while queue or any(slots):
            done: list[_Row] = []
            for j in range(len(slots)):
                while queue and slots[j] is None:
                    row = queue.pop()
                    if self.hook is not None and not self.hook.step(row.index, row.tokens):
                        row.finish_reason = "cancelled"  # dropped before its prefill costs anything
                        done.append(row)
                        continue
                    kv, logits = self._prefill(row)
                    row.tokens.append(self._pick(logits, [row])[0])
                    if self._ended(row):
                        done.append(row)
                        continue
                    if not store:
                        store = [(k.new_zeros((len(slots), k.shape[1], capacity, k.shape[3])),
                                  v.new_zeros((len(slots), v.shape[1], capacity, v.shape[3]))) for k, v in kv]
                    for (sk, sv), (k, v) in zip(store, kv, strict=True):
                        sk[j, :, :k.shape[2]], sv[j, :, :v.shape[2]] = k[0], v[0]
                    slots[j], lens[j] = row, len(row.prompt)
            if done:
                finish(done)
            busy = [j for j, r in enumerate(slots) if r is not None]
            if not busy:
                continue
            if not queue and 2 * len(busy) <= len(slots):  # the tail of the run: stop computing empty slots
                idx = torch.tensor(busy, device=self.device)
                store = [(k[idx], v[idx]) for k, v in store]
                slots, lens = [slots[j] for j in busy], lens[idx]
                busy = list(range(len(slots)))
            width = int(lens.max()) + 1
            mask = torch.arange(width, device=self.device)[None] <= lens[:, None]
            cache = DynamicCache()
            cache.layers = [_SlotLayer(k, v, lens, width) for k, v in store]
            out = self.model(
                input_ids=torch.tensor([[r.tokens[-1] if r else 0] for r in slots], device=self.device),
                attention_mask=mask.long(), position_ids=lens[:, None].clone(),
                past_key_values=cache, use_cache=True, logits_to_keep=1,
            )
            lens[busy] += 1  # empty slots stay at 0, so they never widen the step
            rows = [slots[j] for j in busy]
            for r, t in zip(rows, self._pick(out.logits[busy, -1], rows), strict=True):
                r.tokens.append(t)
            ended = [j for j in busy if self._ended(slots[j])]
            if ended:
                finish([slots[j] for j in ended])
                for j in ended:
                    slots[j] = None
                lens[ended] = 0

    def _ended(self, r: _Row) -> bool:
        """Whether `r` stops after its latest token, noting why in `r.finish_reason`."""
        tail = self.lm.tokenizer.decode(r.tokens[-self._stop_window:], skip_special_tokens=True) if self.p.stop else ""
        if r.tokens[-1] in self.eos or any(s in tail for s in self.p.stop):
            r.finish_reason = "stop"
        elif len(r.tokens) >= self.p.max_new_tokens:
            r.finish_reason = "length"
        elif self.hook is not None and not self.hook.step(r.index, r.tokens):
            r.finish_reason = "cancelled"
        return bool(r.finish_reason)

    @cached_property
    def _stop_window(self) -> int:
        # a stop string of n characters spans at most n tokens (+1 for a token it starts inside)
        return max(len(s) for s in self.p.stop) + 1

    def _prefill(self, row: _Row) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """The prompt's KV (reusing the previous prompt's for a shared prefix) and its last logits."""
        shared = 0
        if self.plain and self._last is not None:
            shared = min(_common_prefix(self._last[0], row.prompt), len(row.prompt) - 1)
        cache = (DynamicCache(ddp_cache_data=[(k[:, :, :shared], v[:, :, :shared]) for k, v in self._last[1]])
                 if shared else DynamicCache(config=self.model.config))
        n = len(row.prompt)
        out = self.model(input_ids=torch.tensor([row.prompt[shared:]], device=self.device),
                         position_ids=torch.arange(shared, n, device=self.device).unsqueeze(0),
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        if self.plain:
            self._last = (row.prompt, kv)
        if self.p.temperature > 0:
            seed = int.from_bytes(hashlib.sha256(repr((self.p.seed, row.prompt)).encode()).digest()[:8], "little")
            row.rng = torch.Generator(device=self.device).manual_seed(seed)
        return kv, out.logits[:, -1]

    def _pick(self, logits: torch.Tensor, rows: list[_Row]) -> list[int]:
        if self.p.temperature <= 0:
            return logits.argmax(-1).tolist()
        probs = torch.softmax(logits.float() / self.p.temperature, dim=-1)
        if self.p.top_p < 1.0:
            # nucleus: keep the most likely tokens until their mass reaches top_p (at least one)
            sorted_p, order = probs.sort(dim=-1, descending=True)
            sorted_p[(sorted_p.cumsum(-1) - sorted_p) >= self.p.top_p] = 0
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        return [int(torch.multinomial(probs[i], 1, generator=r.rng)) for i, r in enumerate(rows)]


class _SlotLayer(DynamicLayer):
    """One layer's view of the slot store for a decode step: the step's key and value go to each
    row's own next column, and attention reads the first `width` columns (a mask hides, per row,
    the columns past its length)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, lens: torch.Tensor, width: int):
        super().__init__()
        self.lazy_initialization(keys, values)
        self._k, self._v, self._rows, self._lens, self._width = (
            keys, values, torch.arange(len(lens), device=lens.device), lens, width)
        # the length the model reads to place the step's query: every column before the last
        self.keys, self.values = keys[:, :, :width - 1], values[:, :, :width - 1]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self._k[self._rows, :, self._lens] = key_states[:, :, 0]
        self._v[self._rows, :, self._lens] = value_states[:, :, 0]
        return self._k[:, :, :self._width], self._v[:, :, :self._width]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _prefix_grouped_order(enc: list[list[int]]) -> list[int]:
    """Prompts sharing most of their tokens next to each other; groups longest first.

    Sorting the token lists puts shared prefixes side by side; a prompt joins its predecessor's
    group when they share at least half its tokens. Longest groups go first so rows admitted later
    are shorter than the running ones and need little padding.
    """
    groups: list[list[int]] = []
    for i in sorted(range(len(enc)), key=lambda i: enc[i]):
        if groups and 2 * _common_prefix(enc[groups[-1][-1]], enc[i]) >= len(enc[i]):
            groups[-1].append(i)
        else:
            groups.append([i])
    groups.sort(key=lambda g: -max(len(enc[i]) for i in g))
    return [i for g in groups for i in g]


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((i for s in stops if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]
