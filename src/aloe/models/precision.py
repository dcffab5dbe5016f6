"""Which floating-point precision to compute in, decided once from what the hardware does fast.

bf16 is not a free win on a CPU: with AMX or AVX-512 BF16, oneDNN runs bf16 matmuls several times
faster than fp32 (a training step 2.3x faster on a 2-core AMX Xeon, 2.29x on a 2-core Zen 4 EPYC
with AVX-512 BF16 and no AMX), but without them torch emulates bf16 and it runs about 4x *slower*
than fp32 (measured on an AVX2 EPYC). So `auto` picks bf16 only where the instructions are there
and torch is allowed to use them.

A recipe run resolves its `device` and `precision` once into a `Policy` (one dtype per role) and
activates it; every in-process model the run builds reads it from there. A stage's own command
(`aloe eval`, `aloe redteam run`, ...) does the same with its `--device` / `--precision`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

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


T = TypeVar("T")


# -- the run's device and precision policy ------------------------------------------------------

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
_TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class Policy:
    """Where every in-process model of a run lives and what it computes in, per role.

    `train` is the trainer's mixed precision (fp32, bf16 or fp16); the dtypes are the weights' of
    generating models (teachers, targets, judges, answers) and of log-likelihood scoring models.
    """

    device: str
    precision: str  # as asked: auto, fp32, bf16, fp16
    train: str
    generate_dtype: str
    score_dtype: str

    def key(self) -> dict[str, str]:
        """What a result depends on: part of every stage's hash, so a change reruns the stages."""
        return asdict(self)

    def record(self) -> dict[str, Any]:
        """The policy and the hardware it was resolved on, for the run manifest."""
        rec: dict[str, Any] = self.key()
        if self.device == "cpu":
            rec["cpu"] = cpu_info()
        elif self.device.startswith("cuda"):
            import torch

            rec["gpu"] = torch.cuda.get_device_name(self.device) if torch.cuda.is_available() else None
        return rec

    def train_settings(self) -> dict[str, Any]:
        """TrainCommon fields for a trainer that follows the policy. Under `auto` the trainer keeps
        its own `bf16: auto` (autocast over fp32 weights where native);
        an explicit bf16 trains bf16 weights, as the eval and generation roles use them."""
        bf16: bool | str = "auto" if self.precision == "auto" else self.train == "bf16"
        return {"device": self.device, "bf16": bf16, "fp16": self.train == "fp16"}

    def require_device(self) -> None:
        """Refuse a run whose device is not here (before any stage starts, rather than mid-run)."""
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.device}: torch sees no CUDA GPU here (torch {torch.__version__}); "
                               "install a CUDA build of torch, or run with --device cpu or auto")
        if self.device == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError("device mps: torch's Metal backend is not available here")


def resolve_device(requested: str = "auto") -> str:
    """`auto`: CUDA when torch sees a GPU, else Apple's mps, else the CPU; the others stay as asked."""
    if not re.match(DEVICE_PATTERN, requested):
        raise ValueError(f"device {requested!r}: expected auto, cpu, cuda, cuda:N or mps")
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def resolve_policy(device: str = "auto", precision: str = "auto", scoring: str | None = None) -> Policy:
    """The one place that decides each role's precision.

    An explicit precision holds for every role. `auto` takes bf16 only where the device computes it
    natively (bf16 GPUs; AMX / AVX-512 BF16 CPUs), with one exception: log-likelihood scoring stays
    fp32 on a CPU, because its accuracies are compared with lm-eval's, which scores in fp32 there.
    Under `auto`, `scoring` sets the scoring role alone: `auto` there is bf16 where native, CPUs
    included (596 of 600 MCQA letters agree with fp32 on the embedded model, README "bf16 on CPUs
    that have it"), for runs whose accuracies are not set beside lm-eval's; `fp32` keeps scoring in
    fp32 on GPUs too. An explicit `precision` still holds for every role.
    fp16 is never chosen by `auto` (its range overflows in some models' activations); ask for it
    on GPUs without bf16.
    """
    dev = resolve_device(device)
    if precision == "fp16" and dev == "cpu":
        raise ValueError("precision fp16: CPUs have no fast fp16 kernels (and trainers refuse it there); "
                         "use bf16 or fp32")
    if scoring not in (None, "auto", "fp32"):
        raise ValueError(f"scoring precision {scoring!r}: expected auto or fp32 (or none)")
    chosen = resolve_precision(precision, dev)
    if precision != "auto":
        score = chosen
    elif scoring is not None:
        score = resolve_precision(scoring, dev)
    else:
        score = "fp32" if dev == "cpu" else chosen
    return Policy(device=dev, precision=precision, train=chosen, generate_dtype=_TORCH_DTYPES[chosen],
                  score_dtype=_TORCH_DTYPES[score])


# Outside a recipe run (a stage's own CLI, a notebook) models load as they always did: fp32 on the CPU.
DEFAULT_POLICY = Policy(device="cpu", precision="fp32", train="fp32", generate_dtype="float32",
                        score_dtype="float32")


class RunScoped(Generic[T]):
    """A setting of the run in progress (its policy, its engine) that code deep inside a stage reads,
    so no call site can forget it; outside a run it is the default."""

    def __init__(self, default: T):
        self.value = default

    def get(self) -> T:
        return self.value

    @contextmanager
    def use(self, value: T) -> Iterator[T]:
        previous, self.value = self.value, value
        try:
            yield value
        finally:
            self.value = previous


# Teachers, judges, embedders and generators are built deep inside stage code; their loaders
# default to the active policy.
_policy = RunScoped(DEFAULT_POLICY)
active_policy = _policy.get
use_policy = _policy.use


def add_policy_args(p: argparse.ArgumentParser) -> None:
    """`--device` and `--precision` for a command that builds models; `aloe.cli.main` activates them
    around the command (`command_policy`), so what it builds follows them as in a recipe run."""
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps: where every model of the command "
                                                    "goes (default auto: a CUDA GPU when there is one, else mps, "
                                                    "else the CPU)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default): bf16 where the device computes it natively, log-likelihood scoring "
                        "staying fp32 on a CPU; else fp32")
    p.set_defaults(policy_args=True)


@contextmanager
def command_policy(args: argparse.Namespace) -> Iterator[Policy | None]:
    """The policy of a command given `add_policy_args`, active for its length; others run as before."""
    if not getattr(args, "policy_args", False):
        yield None
        return
    policy = resolve_policy(args.device, args.precision)
    try:
        policy.require_device()
    except RuntimeError as e:  # the CLI's one-line error, not a traceback
        raise ValueError(str(e)) from None
    with use_policy(policy):
        yield policy


# -- what was actually built, for the manifest ---------------------------------------------------

_used: dict[tuple[str, str, str, str], None] = {}


def note_model(kind: str, model: str, device: str, dtype: str) -> None:
    """Record a model in use, with where it really is: the runner lists them per stage in the manifest."""
    _used[(kind, model, device, dtype)] = None


def take_noted_models() -> list[dict[str, str]]:
    """The models noted since the last call (each once), then forgets them."""
    out = [dict(zip(("kind", "model", "device", "dtype"), k, strict=True)) for k in _used]
    _used.clear()
    return out
