"""The check every result-file contract test shares: a real writer's file with one key renamed must
fail to read, and the error must name the key where it was."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from aloe.io import read_json, write_json


def renamed_key_fails_naming_it(contract: Any, written: Path, drifted: Path, where: Sequence[str | int],
                                old: str, new: str) -> None:
    """Copy `written` to `drifted` with key `old` under the path `where` renamed `new`, then read it."""
    raw = read_json(written)
    parent = raw
    for k in where:
        parent = parent[k]
    parent[new] = parent.pop(old)
    write_json(drifted, raw)
    with pytest.raises(ValueError, match=r"\.".join(map(str, [*where, old]))) as e:
        contract.read(drifted)
    assert new in str(e.value)
