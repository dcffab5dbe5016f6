"""Fixtures for the red-team tests: the scripted OpenAI-compatible peer (see redteam_peers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redteam_peers import start_server
from scripted_openai import ScriptedOpenAIServer


@pytest.fixture()
def server() -> Iterator[ScriptedOpenAIServer]:
    s = start_server()
    try:
        yield s
    finally:
        s.close()
