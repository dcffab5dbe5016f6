"""A scripted OpenAI-compatible judge on 127.0.0.1: it replies by a rule on the prompt it receives."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from scripted_openai import ScriptedOpenAIServer


@pytest.fixture()
def scripted_server() -> Iterator[Callable[[Callable[[list[dict[str, str]]], str]], ScriptedOpenAIServer]]:
    """Starts servers that reply by a rule on the conversation they receive."""
    servers: list[ScriptedOpenAIServer] = []

    def start(reply: Callable[[list[dict[str, str]]], str]) -> ScriptedOpenAIServer:
        servers.append(ScriptedOpenAIServer(lambda body: reply(body["messages"])))
        return servers[-1]

    yield start
    for s in servers:
        s.close()
