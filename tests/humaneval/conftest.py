"""The report tests' realistic run directory, for building a human-eval set from a recipe run."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from scripted_openai import ScriptedOpenAIServer

from aloe.evaluate.openended.run import OpenEvalRequest, run_open_eval

# report_fixture lives beside the report tests, which pytest puts on sys.path only when it collects them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from report_fixture import build_run  # noqa: E402


def _reply(body: dict[str, Any]) -> str:
    if body["model"] == "judge":
        return "<VERDICT>1</VERDICT>"
    digest = hashlib.sha256(body["messages"][-1]["content"].encode()).hexdigest()[:6]
    return f"{body['model']} answers: rest, fluids, and see a clinician [{digest}]"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_checkpoint, tiny_model, smollm_tokenizer) -> Path:
    """A run of its own (the tests here add humaneval/ to it, which the report tests' run must not see).

    The tiny random checkpoint answers open questions with blank lines, which no rater can compare and
    the build rightly skips, so base's open-ended stage is rerun by its real writer on a model that
    answers in words.
    """
    root = build_run(tmp_path_factory.mktemp("runs") / "demo", tiny_checkpoint, tiny_model, smollm_tokenizer)
    out = root / "eval" / "base" / "openended"
    shutil.rmtree(out)  # the writer resumes finished sets; these must be answered afresh
    server = ScriptedOpenAIServer(_reply)
    try:
        run_open_eval(OpenEvalRequest(model=server.spec("base"), sets=["openmedqa", "medquad"], out_dir=out,
                                      judge=server.spec("judge"), limit=8, max_new_tokens=8, judge_max_new_tokens=16,
                                      perplexity=False, progress=False))
    finally:
        server.close()
    return root
