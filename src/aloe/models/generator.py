"""The generation interface every stage uses for teachers, judges, red-team targets and students.

A Generator turns chat conversations into completions. Backends: transformers in-process
(local folders, the embedded default, hub ids), any OpenAI-compatible server, and vLLM's offline
engine. `CachedGenerator` wraps any of them so a completion already paid for is never asked again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

Messages = list[dict[str, str]]


@dataclass
class GenParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int = 0

    def key(self) -> dict[str, Any]:
        return asdict(self)


class Generator(Protocol):
    name: str

    def chat(self, conversations: Sequence[Messages], params: GenParams,
             on_done: Callable[[list[int], list[str]], None] | None = None) -> list[str]:
        """One completion per conversation; `on_done(indices, texts)` as results arrive."""
        ...


class RowHook(Protocol):
    """Watches and steers each row (one conversation) of an in-process generation: the server
    streams tokens and stops the rows of requests nobody waits for any more through it."""

    def step(self, index: int, tokens: Sequence[int]) -> bool:
        """Before row `index` starts (no tokens yet) and after each token it adds; False stops it."""
        ...

    def end(self, index: int, text: str, tokens: Sequence[int], reason: str) -> None:
        """Row `index` is done: "stop" (end of sequence or a stop string), "length" (max_new_tokens
        reached) or "cancelled" (`step` returned False; `text` is what it had produced)."""
        ...


@runtime_checkable
class TokenGenerator(Generator, Protocol):
    """A generator whose prompts can be measured and whose rows can be watched: the in-process one."""

    tokenizer: Any
    context_length: int  # prompt and completion tokens together

    def count_tokens(self, conversation: Messages) -> int:
        """The prompt tokens of one conversation, as generation sees them."""
        ...

    def chat(self, conversations: Sequence[Messages], params: GenParams,
             on_done: Callable[[list[int], list[str]], None] | None = None,
             hook: RowHook | None = None) -> list[str]: ...


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


def get_generator(spec: str, cache_dir: str | None = None, **kwargs: Any) -> Generator:
    """A generator for a model spec; with `cache_dir`, wrapped in the on-disk completion cache."""
    from aloe.models.spec import parse_model_spec

    s = parse_model_spec(spec)
    gen: Generator
    if s.kind == "openai":
        from aloe.models.openai_http import OpenAIChat

        gen = OpenAIChat(s.target, s.served_name or "", **kwargs)
    elif s.kind == "vllm":
        from aloe.models.vllm_engine import VLLMGenerator

        gen = VLLMGenerator(s.target, **kwargs)
    else:
        from aloe.models.hf import HFCausalLM

        gen = HFGenerator(HFCausalLM.from_spec(s, **kwargs), str(s))
    if cache_dir is not None:
        from aloe.models.completion_cache import CachedGenerator
        from aloe.models.loading import weights_fingerprint

        gen = CachedGenerator(gen, cache_dir, identity=weights_fingerprint(s))
    return gen
