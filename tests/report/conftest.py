from __future__ import annotations

from pathlib import Path

import pytest
from report_fixture import build_run


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, tiny_checkpoint, tiny_model, smollm_tokenizer) -> Path:
    return build_run(tmp_path_factory.mktemp("runs") / "demo", tiny_checkpoint, tiny_model, smollm_tokenizer)
