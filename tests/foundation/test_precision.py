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


# -- the run's policy: one dtype per role ---------------------------------------------------------

def _roles(p: precision.Policy) -> tuple[str, str, str, str]:
    return p.device, p.train, p.generate_dtype, p.score_dtype


def test_auto_on_a_bf16_cpu_keeps_scoring_in_fp32(cpu) -> None:
    # MCQA log-likelihoods are compared with lm-eval's fp32 scores; generation and training gain 2-3x
    cpu(XEON, "AVX512")
    assert _roles(precision.resolve_policy("cpu", "auto")) == ("cpu", "bf16", "bfloat16", "float32")


def test_auto_on_a_cpu_without_bf16_is_fp32_throughout(cpu) -> None:
    cpu(EPYC, "AVX2")
    assert _roles(precision.resolve_policy("cpu", "auto")) == ("cpu", "fp32", "float32", "float32")


def test_explicit_bf16_holds_for_every_role_even_scoring(cpu) -> None:
    cpu(EPYC, "AVX2")
    assert _roles(precision.resolve_policy("cpu", "bf16")) == ("cpu", "bf16", "bfloat16", "bfloat16")


def test_scoring_auto_scores_in_bf16_where_native_and_only_under_auto(cpu) -> None:
    cpu(XEON, "AVX512")
    assert _roles(precision.resolve_policy("cpu", "auto", "auto")) == ("cpu", "bf16", "bfloat16", "bfloat16")
    # an explicit precision holds for every role: `aloe run --precision fp32` is fp32 throughout
    assert _roles(precision.resolve_policy("cpu", "fp32", "auto")) == ("cpu", "fp32", "float32", "float32")
    cpu(EPYC, "AVX2")  # emulated bf16 is 4x slower: auto scoring stays fp32 there
    assert _roles(precision.resolve_policy("cpu", "auto", "auto")) == ("cpu", "fp32", "float32", "float32")
    with pytest.raises(ValueError, match="scoring precision 'bf16'"):
        precision.resolve_policy("cpu", "auto", "bf16")


def test_scoring_fp32_keeps_gpu_scoring_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert _roles(precision.resolve_policy("cuda", "auto", "fp32")) == ("cuda", "bf16", "bfloat16", "float32")


@pytest.mark.parametrize(("bf16", "expected"), [(True, ("cuda:1", "bf16", "bfloat16", "bfloat16")),
                                                (False, ("cuda:1", "fp32", "float32", "float32"))])
def test_auto_on_cuda_scores_in_bf16_where_supported(monkeypatch: pytest.MonkeyPatch, bf16: bool,
                                                    expected: tuple[str, ...]) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    assert _roles(precision.resolve_policy("cuda:1", "auto")) == expected


def test_fp16_only_when_asked_and_never_on_a_cpu() -> None:
    assert _roles(precision.resolve_policy("cuda", "fp16")) == ("cuda", "fp16", "float16", "float16")
    with pytest.raises(ValueError, match="precision fp16"):
        precision.resolve_policy("cpu", "fp16")


@pytest.mark.parametrize(("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_device_prefers_cuda_then_mps(monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert precision.resolve_device("auto") == expected


def test_unknown_devices_are_refused() -> None:
    for bad in ("gpu", "cuda:x", "tpu"):
        with pytest.raises(ValueError, match="expected auto, cpu, cuda, cuda:N or mps"):
            precision.resolve_device(bad)


def test_trainers_follow_the_policy(cpu) -> None:
    cpu(XEON, "AVX512")
    # auto leaves the trainer its own `bf16: auto` (fp32 weights, autocast, DPO kept fp32 on a CPU)
    assert precision.resolve_policy("cpu", "auto").train_settings() == {"device": "cpu", "bf16": "auto", "fp16": False}
    assert precision.resolve_policy("cpu", "bf16").train_settings() == {"device": "cpu", "bf16": True, "fp16": False}
    assert precision.resolve_policy("cpu", "fp32").train_settings() == {"device": "cpu", "bf16": False, "fp16": False}
    assert precision.resolve_policy("cuda", "fp16").train_settings() == {"device": "cuda", "bf16": False, "fp16": True}


def test_a_missing_gpu_is_refused_before_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="torch sees no CUDA GPU"):
        precision.resolve_policy("cuda", "bf16").require_device()


def test_the_active_policy_is_the_default_outside_a_run_and_restored_after_one() -> None:
    assert precision.active_policy() == precision.DEFAULT_POLICY
    with precision.use_policy(precision.resolve_policy("cpu", "bf16")) as p:
        assert precision.active_policy() is p
    assert precision.active_policy() == precision.DEFAULT_POLICY
