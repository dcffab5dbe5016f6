"""Fixtures for the red-team tests: the scripted OpenAI-compatible peer (see redteam_peers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redteam_peers import ScriptedServer


@pytest.fixture()
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()
        s.thread.join(timeout=5)
