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
    w = torch.tensor(list(weights), dtype=torch.float32).view(-1, *([1] * tensors[0].dim()))
    stacked = torch.stack([t.float() for t in tensors])
    out = (w * stacked).sum(0)
    if normalize:
        out = out / w.sum()
    return out


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
    dot = ((a / torch.where(na > 1e-8, na, 1)) * (b / torch.where(nb > 1e-8, nb, 1))).sum(1, keepdim=True)
    dot = dot.clamp(-1, 1)
    collinear = dot.abs() > SLERP_DOT_THRESHOLD
    theta = torch.acos(torch.where(collinear, 0, dot))
    sin_theta = torch.sin(theta)
    ca = torch.where(collinear, 1 - t, torch.sin((1 - t) * theta) / sin_theta)
    cb = torch.where(collinear, t, torch.sin(t * theta) / sin_theta)
    return (ca * a + cb * b).reshape(v0.shape)


def magnitude_prune(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `density` fraction of entries with the largest magnitude (TIES' trim step)."""
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * delta.numel()))
    mask = torch.zeros(delta.numel(), dtype=delta.dtype)
    mask[torch.argsort(delta.abs().reshape(-1), descending=True)[:k]] = 1
    return delta * mask.view_as(delta)


def dare_drop(delta: torch.Tensor, density: float, generator: torch.Generator | None) -> torch.Tensor:
    """Drop each entry with probability 1-density and scale survivors by 1/density (E[out] = delta)."""
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    keep = torch.bernoulli(torch.full_like(delta, density), generator=generator)
    return delta * keep / density


def elect_sign_mask(weighted_deltas: torch.Tensor) -> torch.Tensor:
    """TIES sign election ('sum' consensus): per entry, the sign of the summed weighted deltas
    (ties go positive, as in mergekit); a model's delta counts only where it agrees with it."""
    majority = (weighted_deltas.sum(0) >= 0).to(weighted_deltas.dtype) * 2 - 1
    return weighted_deltas.sign() == majority


def task_arithmetic_family(
    base: torch.Tensor | None, tensors: Sequence[torch.Tensor], weights: Sequence[float],
    densities: Sequence[float] | None = None, *, sparsify: str | None, consensus: bool,
    normalize: bool, lam: float = 1.0, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """base + lambda * combine_i(w_i * sparsify(x_i - base)); the shared core of task arithmetic,
    TIES, DARE-TIES and DARE-linear (mergekit's GeneralizedTaskArithmeticMerge)."""
    if base is None:
        raise ValueError("this method needs a base model (the deltas are taken against it)")
    b = base.float()
    dens = list(densities) if densities is not None else [1.0] * len(tensors)
    deltas = []
    for x, d in zip(tensors, dens, strict=True):
        delta = x.float() - b
        if sparsify == "magnitude":
            delta = magnitude_prune(delta, d)
        elif sparsify == "random":
            delta = dare_drop(delta, d, generator)
        deltas.append(delta)
    w = torch.tensor(list(weights), dtype=torch.float32).view(-1, *([1] * b.dim()))
    weighted = torch.stack(deltas) * w
    if consensus:
        mask = elect_sign_mask(weighted).to(weighted.dtype)
        mixed = (weighted * mask).sum(0)
        divisor = (w * mask).sum(0)
        divisor[divisor == 0] = 1
    else:
        mixed = weighted.sum(0)
        divisor = w.sum(0).expand_as(mixed).clone()
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed = mixed / divisor
    return b + lam * mixed


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: Callable[..., torch.Tensor]
    needs_base: bool
    random: bool = False  # uses the per-tensor generator (DARE)


def _tav(sparsify: str | None, consensus: bool, normalize_default: bool) -> Callable[..., torch.Tensor]:
    def fn(base, tensors, weights, densities=None, normalize=normalize_default, lam=1.0, generator=None, **_):
        return task_arithmetic_family(base, tensors, weights, densities, sparsify=sparsify,
                                      consensus=consensus, normalize=normalize, lam=lam, generator=generator)
    return fn


# Each function's keyword defaults are mergekit 0.1.5's for that method (`normalize` differs).
METHODS: dict[str, MergeMethod] = {m.name: m for m in [
    MergeMethod("linear", linear, needs_base=False),
    MergeMethod("slerp", slerp, needs_base=True),
    MergeMethod("task_arithmetic", _tav(None, False, False), needs_base=True),
    MergeMethod("ties", _tav("magnitude", True, True), needs_base=True),
    MergeMethod("dare_ties", _tav("random", True, False), needs_base=True,
                random=True),
    MergeMethod("dare_linear", _tav("random", False, False), needs_base=True,
                random=True),
]}


def get_method(name: str) -> MergeMethod:
    if name not in METHODS:
        raise ValueError(f"unknown merge method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]
