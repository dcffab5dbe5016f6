"""The generation interface every stage uses for teachers, judges, red-team targets and students.

A Generator turns chat conversations into completions. The backends (aloe.models.backends) import
this module and never the other way round, so the protocol has no import circle with them.
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
