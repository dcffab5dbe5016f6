"""Fixtures for training tests: a tiny random checkpoint on disk and a small conversation set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TRAIN_DATA = Path(__file__).resolve().parents[2] / "src" / "aloe" / "data" / "train"


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, tiny_model, smollm_tokenizer):
    path = tmp_path_factory.mktemp("tiny") / "model"
    tiny_model.save_pretrained(path)
    smollm_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def conversations_file(tmp_path_factory):
    """40 short MedQuAD conversations from the packaged slice (answers cut to keep steps fast)."""
    path = tmp_path_factory.mktemp("data") / "convs.jsonl"
    with open(TRAIN_DATA / "sft_medquad.jsonl") as src, open(path, "w") as dst:
        for i, line in enumerate(src):
            if i == 40:
                break
            row = json.loads(line)
            row["messages"][1]["content"] = row["messages"][1]["content"][:200]
            dst.write(json.dumps(row) + "\n")
    return path
