"""A generator that reads the prompt it is given, so tests can check what the strategy showed it."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import pytest

from aloe.models.generator import GenParams, Messages

_OPTION = re.compile(r"^([A-J])\. (.*)$", re.MULTILINE)


def shown_options(messages: Messages) -> dict[str, str]:
    """The lettered options of the last user turn, as the model saw them."""
    return dict(_OPTION.findall(messages[-1]["content"]))


class PromptReadingGenerator:
    """Answers with the letter under which `answer_for(options)` appears in the prompt; logs each call."""

    name = "prompt-reader"

    def __init__(self, reply: Callable[[dict[str, str], GenParams], str]):
        self.reply = reply
        self.calls: list[tuple[int, GenParams]] = []
        self.prompts: list[Messages] = []

    def chat(self, conversations: Sequence[Messages], params: GenParams, on_done=None) -> list[str]:
        self.calls.append((len(conversations), params))
        self.prompts.extend(conversations)
        out = [self.reply(shown_options(c), params) for c in conversations]
        if on_done:
            on_done(list(range(len(out))), out)
        return out


@pytest.fixture()
def make_reader():
    return PromptReadingGenerator
