"""Merge methods over tensors, in one registry (the mergekit shape).

Each method takes the base tensor (or None), the other models' tensors and their per-model
weights/densities, and returns one merged tensor. The formulas follow mergekit 0.1.5
(`merge_methods/generalized_task_arithmetic.py`, `slerp.py`, `linear.py`, `sparsify.py`) with one
deliberate difference, named where it is made: DARE rescales kept deltas by 1/density (the DARE
paper, which keeps each delta's expected value), where mergekit 0.1.5 rescales to the original L1 norm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

SLERP_DOT_THRESHOLD = 0.9995  # mergekit's: above it the vectors are near-collinear, so lerp


def linear(base: torch.Tensor | None, tensors: Sequence[torch.Tensor], weights: Sequence[float],
           normalize: bool = True, **_: Any) -> torch.Tensor:
    """sum_i w_i x_i, divided by sum_i w_i when `normalize`."""
    out = torch.zeros(tensors[0].shape, dtype=torch.float32)
    for t, w in zip(tensors, weights, strict=True):
        out.add_(t.float(), alpha=w)  # accumulated in place: one output-sized buffer, no stack
    return out.div_(sum(weights)) if normalize else out


def slerp(base: torch.Tensor | None, tensors: Sequence[torch.Tensor], t: float = 0.5,
          **_: Any) -> torch.Tensor:
    """Spherical interpolation from `base` (t=0) to the one other model (t=1).

    As in mergekit 0.1.5 it runs per row of the leading axis (each output neuron's weight vector);
    rows whose normalised dot product exceeds 0.9995 in magnitude fall back to linear interpolation.
    """
    if base is None or len(tensors) != 1:
        raise ValueError("slerp needs a base model and exactly one other model")
    v0, v1 = base.float(), tensors[0].float()
    if v0.dim() == 0:
        return (1 - t) * v0 + t * v1
    a, b = v0.reshape(v0.shape[0], -1), v1.reshape(v1.shape[0], -1)
    na = a.norm(dim=1, keepdim=True)
    nb = b.norm(dim=1, keepdim=True)
    dot = ((a * b).sum(1, keepdim=True) / (torch.where(na > 1e-8, na, 1) * torch.where(nb > 1e-8, nb, 1)))
    dot = dot.clamp(-1, 1)
    collinear = dot.abs() > SLERP_DOT_THRESHOLD
    theta = torch.acos(torch.where(collinear, 0, dot))
    sin_theta = torch.sin(theta)
    ca = torch.where(collinear, 1 - t, torch.sin((1 - t) * theta) / sin_theta)
    cb = torch.where(collinear, t, torch.sin(t * theta) / sin_theta)
    return (a * ca).add_(b * cb).reshape(v0.shape)


def magnitude_prune_(delta: torch.Tensor, density: float) -> torch.Tensor:
    """In place: keep the `density` fraction of entries with the largest magnitude (TIES' trim).
    mergekit keeps exactly k by argsort; a k-th-value threshold needs no int64 index tensor (8
    bytes per weight) and differs only where magnitudes tie at the threshold."""
    if density >= 1:
        return delta
    if density <= 0:
        return delta.zero_()
    k = max(1, int(density * delta.numel()))
    mag = delta.abs()
    threshold = mag.reshape(-1).kthvalue(delta.numel() - k + 1).values
    return delta.mul_(mag >= threshold)


def dare_drop_(delta: torch.Tensor, density: float, generator: torch.Generator | None) -> torch.Tensor:
    """In place: drop each entry with probability 1-density and scale survivors by 1/density, so
    E[out] = delta (the DARE paper's rescaling)."""
    if density >= 1:
        return delta
    if density <= 0:
        return delta.zero_()
    keep = torch.rand(delta.shape, generator=generator) < density
    return delta.mul_(keep).div_(density)


def elect_sign_mask(weighted_deltas: torch.Tensor) -> torch.Tensor:
    """TIES sign election ('sum' consensus): per entry, the sign of the summed weighted deltas
    (ties go positive, as in mergekit); a model's delta counts only where it has that sign."""
    positive = weighted_deltas.sum(0) >= 0
    return torch.where(positive, weighted_deltas > 0, weighted_deltas < 0)


def task_arithmetic_family(
    base: torch.Tensor | None, tensors: Sequence[torch.Tensor], weights: Sequence[float],
    densities: Sequence[float] | None = None, *, sparsify: str | None, consensus: bool,
    normalize: bool, lam: float = 1.0, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """base + lambda * combine_i(w_i * sparsify(x_i - base)); the shared core of task arithmetic,
    TIES, DARE-TIES and DARE-linear (mergekit's GeneralizedTaskArithmeticMerge). Works in one
    (models x tensor) buffer, in place, so memory stays a small multiple of one tensor."""
    if base is None:
        raise ValueError("this method needs a base model (the deltas are taken against it)")
    b = base.float()
    dens = list(densities) if densities is not None else [1.0] * len(tensors)
    weighted = torch.empty((len(tensors), *b.shape), dtype=torch.float32)
    for i, (x, d, w) in enumerate(zip(tensors, dens, weights, strict=True)):
        delta = torch.sub(x.float(), b, out=weighted[i])
        if sparsify == "magnitude":
            magnitude_prune_(delta, d)
        elif sparsify == "random":
            dare_drop_(delta, d, generator)
        delta.mul_(w)
    if consensus:
        mask = elect_sign_mask(weighted)
        weighted.mul_(mask)
        mixed = weighted.sum(0)
        divisor = torch.zeros_like(mixed)
        for i, w in enumerate(weights):
            divisor.add_(mask[i], alpha=w)
        divisor[divisor == 0] = 1
    else:
        mixed = weighted.sum(0)
        total = float(sum(weights))
        divisor = torch.tensor(1.0 if abs(total) < 1e-8 else total)
    del weighted
    if normalize:
        mixed.div_(divisor)
    return mixed.mul_(lam).add_(b)


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: Callable[..., torch.Tensor]
    needs_base: bool
    random: bool = False  # uses the per-tensor generator (DARE)
    # The `parameters:` a config may set; every method is called with the same keywords (weights,
    # densities, generator), so the functions take `**_`, and a typo is caught here instead.
    parameters: tuple[str, ...] = ("normalize", "lam")


def _tav(sparsify: str | None, consensus: bool, normalize_default: bool) -> Callable[..., torch.Tensor]:
    def fn(base, tensors, weights, densities=None, normalize=normalize_default, lam=1.0, generator=None, **_):
        return task_arithmetic_family(base, tensors, weights, densities, sparsify=sparsify,
                                      consensus=consensus, normalize=normalize, lam=lam, generator=generator)
    return fn


# Each function's keyword defaults are mergekit 0.1.5's for that method (`normalize` differs).
METHODS: dict[str, MergeMethod] = {m.name: m for m in [
    MergeMethod("linear", linear, needs_base=False, parameters=("normalize",)),
    MergeMethod("slerp", slerp, needs_base=True, parameters=("t",)),
    MergeMethod("task_arithmetic", _tav(None, False, False), needs_base=True),
    MergeMethod("ties", _tav("magnitude", True, True), needs_base=True),
    MergeMethod("dare_ties", _tav("random", True, False), needs_base=True, random=True),
    MergeMethod("dare_linear", _tav("random", False, False), needs_base=True, random=True),
]}


def get_method(name: str) -> MergeMethod:
    if name not in METHODS:
        raise ValueError(f"unknown merge method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]
