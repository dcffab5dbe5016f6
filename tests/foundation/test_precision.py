"""Precision detection from CPU flags and torch's capability, with both faked (no model loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aloe.models import precision

XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16
"""
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx2 fma\n"


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    def fake(cpuinfo: str | None, capability: str) -> None:
        path = tmp_path / "cpuinfo"
        if cpuinfo is not None:
            path.write_text(cpuinfo)
        monkeypatch.setattr(precision, "_CPUINFO", path)
        monkeypatch.setattr(precision, "torch_cpu_capability", lambda: capability)
    return fake


def test_amx_xeon_is_bf16_capable_and_auto_picks_bf16(cpu) -> None:
    cpu(XEON, "AVX512")
    assert precision.cpu_bf16_capable()
    assert precision.resolve_precision("auto") == "bf16"


def test_avx512_bf16_alone_is_enough(cpu) -> None:
    cpu("flags\t: avx2 avx512f avx512_bf16\n", "AVX512")
    assert precision.resolve_precision("auto") == "bf16"


def test_cpu_without_bf16_instructions_stays_fp32(cpu) -> None:
    # bf16 is emulated there and measured ~4x slower than fp32
    cpu(EPYC, "AVX2")
    assert not precision.cpu_bf16_capable()
    assert precision.resolve_precision("auto") == "fp32"


def test_capability_lowered_by_torch_overrides_the_flags(cpu) -> None:
    # ATEN_CPU_CAPABILITY=avx2 on an AMX machine: torch will not run the bf16 kernels
    cpu(XEON, "AVX2")
    assert not precision.cpu_bf16_capable()
    assert precision.resolve_precision("auto") == "fp32"


def test_no_cpuinfo_means_fp32(cpu) -> None:
    cpu(None, "AVX512")
    assert precision.resolve_precision("auto") == "fp32"
    assert precision.cpu_info()["model"] == "unknown"


@pytest.mark.parametrize("asked", ["fp32", "bf16", "fp16"])
def test_explicit_precision_is_kept(cpu, asked: str) -> None:
    cpu(EPYC, "AVX2")
    assert precision.resolve_precision(asked) == asked


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        precision.resolve_precision("int8")


def test_cuda_auto_follows_bf16_support(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert precision.resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert precision.resolve_precision("auto", "cuda:0") == "fp32"


def test_cpu_info_records_what_the_choice_was_made_from(cpu) -> None:
    cpu(XEON, "AVX512")
    assert precision.cpu_info() == {
        "model": "Intel(R) Xeon(R) Processor", "torch_capability": "AVX512",
        "flags": ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"], "bf16_capable": True,
    }
