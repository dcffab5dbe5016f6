"""Resolve a model spec to weights on disk and load them with transformers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aloe.models.embedded import embedded_checkpoint
from aloe.models.precision import active_policy, note_model
from aloe.models.spec import ModelSpec, parse_model_spec

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def weights_fingerprint(spec: str | ModelSpec) -> str:
    """The spec plus, for local weights, the safetensors files' sizes and modification times (ns), so
    a model retrained into the same folder is a different model to every cache and result key."""
    s = parse_model_spec(spec)
    if s.kind in ("local", "embedded"):
        files = sorted(Path(resolve_weights(s)).glob("*.safetensors"))
        return str(s) + "|" + "|".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    return str(s)


def resolve_weights(spec: str | ModelSpec) -> str:
    """A local folder or a hub id that `from_pretrained` accepts."""
    s = parse_model_spec(spec)
    if s.kind == "embedded":
        return str(embedded_checkpoint(s.target))
    if s.kind == "local":
        p = Path(s.target)
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p} is not a model folder (no config.json)")
        return str(p)
    if s.kind in ("hub", "vllm"):
        return s.target
    raise ValueError(f"{s}: an OpenAI-compatible server has no weights to load in-process")


def load_causal_lm(
    spec: str | ModelSpec,
    dtype: str | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode; dtype and device default to the active policy's scoring
    precision and device.

    Only safetensors weights are accepted: a `.bin` checkpoint is a pickle and can run code when
    loaded, so it is refused rather than trusted. `trust_remote_code` stays off unless asked for.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = active_policy()
    dtype, device = dtype or policy.score_dtype, device or policy.device
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(sorted(_DTYPES))}")
    where = resolve_weights(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            where, dtype=getattr(torch, _DTYPES[dtype]), use_safetensors=True,
            trust_remote_code=trust_remote_code,
        )
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise OSError(
            f"could not load model {spec!r} from {where}"
            + (" (HF_HUB_OFFLINE=1: hub ids work only when cached)" if offline else "")
            + f": {e}"
        ) from e
    model.to(device).eval()
    note_model("transformers", str(spec), str(model.device), str(model.dtype).removeprefix("torch."))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
