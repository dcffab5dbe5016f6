"""Loading Conversation and Preference records for training, with clear errors for bad records,
and shaping them into the rows TRL's trainers take."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aloe.io import RecordError, iter_jsonl
from aloe.records import Conversation, Preference

ROLES = {"system", "user", "assistant"}


def _iter_rows(path: str | Path) -> Iterator[tuple[Path, int | str, dict[str, Any]]]:
    """(file, line or row index, dict) from a jsonl file, a folder of jsonl files, or a
    `datasets.save_to_disk` folder."""
    p = Path(path)
    if p.is_dir():
        if (p / "dataset_info.json").is_file() or (p / "state.json").is_file():
            from datasets import load_from_disk

            ds = load_from_disk(str(p))
            for i, row in enumerate(ds):
                yield p, f"row {i}", dict(row)
            return
        files = sorted([*p.glob("*.jsonl"), *p.glob("*.jsonl.gz")])
        if not files:
            raise FileNotFoundError(f"{p}: no *.jsonl files and not a datasets folder")
        for f in files:
            for lineno, obj in iter_jsonl(f):
                yield f, lineno, obj
        return
    for lineno, obj in iter_jsonl(p):
        yield p, lineno, obj


def _check_messages(messages: Any, path: Path, where: int | str, field: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise RecordError(path, where, field, "expected a non-empty list of {role, content} messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RecordError(path, where, f"{field}[{i}]",
                              f"expected {{role: system|user|assistant, content: str}}, got {str(m)[:80]}")


def load_conversations(path: str | Path) -> list[Conversation]:
    out = []
    for f, where, row in _iter_rows(path):
        for key in ("id", "messages", "source"):
            if key not in row:
                raise RecordError(f, where, key, "missing (a Conversation needs id, messages, source)")
        _check_messages(row["messages"], f, where, "messages")
        if not any(m["role"] == "assistant" for m in row["messages"]):
            raise RecordError(f, where, "messages", "no assistant turn to learn from")
        out.append(Conversation.from_dict(row))
    return out


def load_preferences(path: str | Path) -> list[Preference]:
    out = []
    for f, where, row in _iter_rows(path):
        for key in ("id", "prompt", "chosen", "rejected", "source"):
            if key not in row:
                raise RecordError(f, where, key, "missing (a Preference needs id, prompt, chosen, rejected, source)")
        _check_messages(row["prompt"], f, where, "prompt")
        for key in ("chosen", "rejected"):
            if not isinstance(row[key], str) or not row[key].strip():
                raise RecordError(f, where, key, "expected a non-empty string")
        out.append(Preference.from_dict(row))
    return out


def to_prompt_completion(conv: Conversation, system_prompt: str | None = None) -> dict[str, list[dict[str, str]]]:
    """Conversational prompt/completion row: the completion is the last assistant turn, the prompt
    everything before it. TRL masks the loss to the completion in this format with any chat
    template (`assistant_only_loss` needs `{% generation %}` markers most templates lack), so only
    the final assistant turn is learned; earlier turns are context."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in conv.messages]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    prompt = msgs[:last]
    if system_prompt and not any(m["role"] == "system" for m in prompt):
        prompt = [{"role": "system", "content": system_prompt}, *prompt]
    return {"prompt": prompt, "completion": [msgs[last]]}


def to_dpo_row(pref: Preference) -> dict[str, Any]:
    return {"prompt": pref.prompt, "chosen": [{"role": "assistant", "content": pref.chosen}],
            "rejected": [{"role": "assistant", "content": pref.rejected}]}


def split_holdout(items: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, held out), a deterministic shuffle split; at least one item each side when possible."""
    import random

    idx = list(range(len(items)))
    random.Random(seed).shuffle(idx)
    n_eval = min(len(items) - 1, max(1, round(len(items) * fraction))) if fraction > 0 and len(items) > 1 else 0
    held = set(idx[:n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]
