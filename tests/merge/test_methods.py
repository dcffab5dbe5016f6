"""Each merge method against its formula on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from aloe.merge.methods import METHODS, dare_drop_, elect_sign_mask, get_method, magnitude_prune_


def test_linear_is_weighted_mean():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    out = get_method("linear").fn(None, [a, b], weights=[1.0, 3.0], normalize=True)
    assert torch.allclose(out, (1 * a + 3 * b) / 4)
    raw = get_method("linear").fn(None, [a, b], weights=[1.0, 3.0], normalize=False)
    assert torch.allclose(raw, a + 3 * b)


def test_slerp_of_orthogonal_vectors_stays_on_the_circle():
    v0 = torch.tensor([[1.0, 0.0]])
    v1 = torch.tensor([[0.0, 1.0]])
    for t in (0.0, 0.25, 0.5, 1.0):
        out = get_method("slerp").fn(v0, [v1], t=t)
        # theta = pi/2: slerp walks the unit circle, angle t*pi/2 from v0
        assert torch.allclose(out, torch.tensor([[math.cos(t * math.pi / 2), math.sin(t * math.pi / 2)]]), atol=1e-6)
        assert abs(out.norm().item() - 1.0) < 1e-6
    # linear interpolation would shrink the midpoint to norm 1/sqrt(2)
    mid = get_method("slerp").fn(v0, [v1], t=0.5)
    assert mid.norm().item() > 0.99


def test_slerp_is_per_row_and_falls_back_to_lerp_for_collinear_rows():
    v0 = torch.tensor([[1.0, 0.0], [2.0, 2.0]])
    v1 = torch.tensor([[0.0, 1.0], [4.0, 4.0]])  # row 2 collinear with row 2 of v0
    out = get_method("slerp").fn(v0, [v1], t=0.5)
    assert torch.allclose(out[0], torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]), atol=1e-6)
    assert torch.allclose(out[1], torch.tensor([3.0, 3.0]))


def test_task_arithmetic_adds_weighted_deltas():
    base = torch.tensor([1.0, 1.0, 1.0])
    x1, x2 = torch.tensor([2.0, 1.0, 0.0]), torch.tensor([1.0, 3.0, 1.0])
    out = get_method("task_arithmetic").fn(base, [x1, x2], weights=[0.5, 1.0], lam=2.0)
    assert torch.allclose(out, base + 2.0 * (0.5 * (x1 - base) + 1.0 * (x2 - base)))


def test_ties_sign_election_and_disjoint_mean():
    base = torch.zeros(4)
    # entry 0: +3 vs -1 -> elected +, mean of agreeing = 3
    # entry 1: -2 vs +1 -> elected -, -2; entry 2: +1 vs +1 -> 1; entry 3: 0 vs -1 -> elected -, -1
    x1 = torch.tensor([3.0, -2.0, 1.0, 0.0])
    x2 = torch.tensor([-1.0, 1.0, 1.0, -1.0])
    mask = elect_sign_mask(torch.stack([x1, x2]))
    assert mask.tolist() == [[True, True, True, False], [False, False, True, True]]
    out = get_method("ties").fn(base, [x1, x2], weights=[1.0, 1.0], densities=[1.0, 1.0])
    assert torch.allclose(out, torch.tensor([3.0, -2.0, 1.0, -1.0]))


def test_ties_trims_small_deltas_before_voting():
    d = torch.tensor([0.1, -5.0, 0.2, 3.0])
    assert magnitude_prune_(d.clone(), 0.5).tolist() == [0.0, -5.0, 0.0, 3.0]
    base = torch.zeros(4)
    out = get_method("ties").fn(base, [d], weights=[1.0], densities=[0.5])
    assert out.tolist() == [0.0, -5.0, 0.0, 3.0]


def test_dare_rescaling_keeps_the_expected_value():
    torch.manual_seed(0)
    delta = torch.randn(200_000)
    g = torch.Generator().manual_seed(1)
    dropped = dare_drop_(delta.clone(), 0.3, g)
    kept = dropped != 0
    assert abs(kept.float().mean().item() - 0.3) < 0.01
    assert torch.allclose(dropped[kept], delta[kept] / 0.3)
    # E[dare(d)] = d: averaged over many draws on one fixed vector
    small = torch.tensor([1.0, -2.0, 0.5])
    mean = torch.stack([dare_drop_(small.clone(), 0.25, g) for _ in range(20_000)]).mean(0)
    assert torch.allclose(mean, small, atol=0.06)


@pytest.mark.parametrize("name", ["dare_ties", "dare_linear"])
def test_dare_methods_at_full_density_equal_their_deterministic_parents(name):
    base = torch.tensor([0.0, 1.0, 2.0])
    xs = [torch.tensor([1.0, 0.0, 3.0]), torch.tensor([-1.0, 2.0, 2.5])]
    parent = "ties" if name == "dare_ties" else "task_arithmetic"
    kw = {"weights": [0.5, 0.5], "densities": [1.0, 1.0], "normalize": False}
    assert torch.allclose(get_method(name).fn(base, xs, generator=torch.Generator(), **kw),
                          get_method(parent).fn(base, xs, **kw))


def test_registry_names_and_unknown_method():
    assert set(METHODS) == {"linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear"}
    with pytest.raises(ValueError, match="unknown merge method 'foo'"):
        get_method("foo")


@pytest.mark.parametrize("name", list(METHODS))
def test_methods_leave_their_inputs_untouched(name):
    base, xs = torch.randn(3, 5), [torch.randn(3, 5)]
    if name == "linear":
        xs.append(torch.randn(3, 5))
    before = [base.clone(), *(x.clone() for x in xs)]
    get_method(name).fn(base, xs, weights=[0.7] * len(xs), densities=[0.5] * len(xs), generator=torch.Generator())
    assert all(torch.equal(a, b) for a, b in zip(before, [base, *xs]))
