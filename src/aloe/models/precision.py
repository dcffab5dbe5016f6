"""Which floating-point precision to compute in, decided once from what the hardware does fast.

bf16 is not a free win on a CPU: with AMX or AVX-512 BF16, oneDNN runs bf16 matmuls several times
faster than fp32 (2.3x on a training step measured on a 2-core Xeon), but without them torch
emulates bf16 and it runs about 4x *slower* than fp32 (measured on an AVX2 EPYC). So `auto` picks
bf16 only where the instructions are there and torch is allowed to use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Either set gives oneDNN native bf16 dot products; the others are listed for the record.
_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
_RECORDED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16")
# torch names its CPU kernel levels; AVX512 is the one under which the bf16 paths run natively.
# ATEN_CPU_CAPABILITY can lower it, and then bf16 must not be chosen whatever the flags say.
_BF16_CAPABILITIES = frozenset({"AVX512"})
_CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's `key: value` lines ({} where /proc/cpuinfo does not exist)."""
    try:
        text = _CPUINFO.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor ends at the first blank line; the others repeat it
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_flags() -> set[str]:
    return set(_cpuinfo_fields().get("flags", "").split())


def torch_cpu_capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def cpu_bf16_capable() -> bool:
    """Whether bf16 matmuls on this CPU run natively (AMX or AVX-512 BF16) and torch may use them."""
    return bool(cpu_flags() & _BF16_FLAGS) and torch_cpu_capability() in _BF16_CAPABILITIES


def cpu_info() -> dict[str, Any]:
    """What the precision choice was made from, to record beside it."""
    fields = _cpuinfo_fields()
    flags = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name", "unknown"),
        "torch_capability": torch_cpu_capability(),
        "flags": [f for f in _RECORDED_FLAGS if f in flags],
        "bf16_capable": cpu_bf16_capable(),
    }


def resolve_precision(requested: str, device: str = "cpu") -> str:
    """`auto` becomes bf16 where the device computes it natively, else fp32; the others stay as asked."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if device == "cpu":
        return "bf16" if cpu_bf16_capable() else "fp32"
    return "fp32"  # other backends (mps, xpu): no measurement behind bf16 there yet
