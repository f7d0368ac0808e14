"""Exact-value tests of the forecast approximators (reuse, taylor, hermite, foca) on synthetic sequences."""

from __future__ import annotations

import math

import pytest
import torch

from tokencache.core.approximators import (
    APPROXIMATORS,
    FoCaApproximator,
    HermiteApproximator,
    ReuseApproximator,
    TaylorApproximator,
    coordinate,
    make_approximator,
)

SHAPE = (2, 6, 3)  # (B, N, C) token tensors
SPACINGS = {
    "uniform": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    "nonuniform": [0.0, 0.5, 2.0, 2.3, 4.0, 4.1],
    "timesteps_down": [999.0, 979.0, 939.0, 800.0, 781.0, 500.0],
}


def poly(degree: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    coef = [torch.randn(SHAPE, generator=g, dtype=dtype) for _ in range(degree + 1)]
    return lambda x: sum(c * x**j for j, c in enumerate(coef))


def close(a, b, tol=1e-9):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_taylor_exact_on_polynomials_up_to_its_order(spacing, order, degree):
    xs = SPACINGS[spacing]
    f = poly(degree)
    ap = TaylorApproximator(order)
    for x in xs[:-2]:
        ap.update(x, f(x))
    for x in xs[-2:]:  # one and two skipped coordinates ahead
        if degree <= order:
            close(ap.predict(x), f(x), tol=1e-7)
        else:  # a polynomial of higher degree is not reproduced
            assert not torch.allclose(ap.predict(x), f(x), atol=1e-6)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_taylor_derivatives_are_the_true_derivatives(spacing):
    xs = SPACINGS[spacing][:4]
    f = poly(3, seed=1)
    ap = TaylorApproximator(3)
    for x in xs:
        ap.update(x, f(x))
    x0, h = xs[-1], 1e-3
    # exact derivatives of the cubic at x0 by its coefficients
    g = torch.Generator().manual_seed(1)
    coef = [torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(4)]
    true = [sum(c * math.perm(j, m) * x0 ** (j - m) for j, c in enumerate(coef) if j >= m) for m in range(4)]
    for d, t in zip(ap.derivatives(), true):
        close(d, t, tol=1e-6 * max(1.0, abs(x0)) ** 3)
    # and predict equals the Taylor form sum d^(i) h^i / i!
    taylor = sum(d * h**i / math.factorial(i) for i, d in enumerate(ap.derivatives()))
    close(ap.predict(x0 + h), taylor, tol=1e-6)


def test_taylor_order_reduction_before_enough_updates():
    f = poly(3, seed=2)
    ap = TaylorApproximator(3)
    assert not ap.ready
    v0 = f(0.0)
    ap.update(0.0, v0)
    assert ap.ready
    assert ap.predict(1.0) is v0  # order 0 = reuse, same object
    ap.update(1.0, f(1.0))
    close(ap.predict(3.0), f(1.0) + 2.0 * (f(1.0) - f(0.0)))  # order 1
    ap.update(3.0, f(3.0))
    s1, s0 = (f(3.0) - f(1.0)) / 2, f(1.0) - f(0.0)
    c2 = (s1 - s0) / 3
    close(ap.predict(4.0), f(3.0) + s1 * 1 + c2 * 1 * 3)  # order 2 Newton form
    ap.update(4.0, f(4.0))
    close(ap.predict(6.0), f(6.0), tol=1e-8)  # order 3: the cubic exactly
    assert len(ap._c) == 4  # never more than order + 1 tensors
    ap.update(5.0, f(5.0))
    assert len(ap._c) == 4 and len(ap._xs) == 4


def test_taylorseer_scheme_matches_the_authors_recursion():
    f = lambda x: torch.full(SHAPE, float(x) ** 2, dtype=torch.float64)  # noqa: E731
    ts = TaylorApproximator(2, scheme="taylorseer")
    nw = TaylorApproximator(2)
    for x in (0.0, 1.0, 2.0):
        ts.update(x, f(x))
        nw.update(x, f(x))
    # D1 = 3, D2 = 2 at x0 = 2: 4 + 3 + 2 / 2 = 8 (not 9); Newton gives 9
    close(ts.predict(3.0), torch.full(SHAPE, 8.0, dtype=torch.float64))
    close(nw.predict(3.0), f(3.0))
    # order 1: both are the same finite-difference slope, at any spacing
    a, b = TaylorApproximator(1, scheme="taylorseer"), TaylorApproximator(1)
    g = poly(2, seed=3)
    for x in (0.0, 0.5, 2.0):
        a.update(x, g(x))
        b.update(x, g(x))
    close(a.predict(3.7), b.predict(3.7))
    with pytest.raises(ValueError, match="forecast_scheme"):
        TaylorApproximator(1, scheme="bogus")


def test_reuse_returns_the_last_value_itself_and_scatters_rows_in_place():
    ap = ReuseApproximator()
    v1, v2 = torch.randn(SHAPE), torch.randn(SHAPE)
    ap.update(0.0, v1)
    ap.update(1.0, v2)
    assert ap.predict(2.0) is v2 and ap.predict(7.0) is v2
    idx = torch.tensor([[1, 4], [0, 5]])
    rows = torch.randn(2, 2, 3)
    expect = v2.clone()
    for b in range(2):
        expect[b, idx[b]] = rows[b]
    ap.update_rows(2.0, idx, rows)
    out = ap.predict(2.0)
    assert out is v2
    close(out, expect, tol=0)
    assert ap.nbytes() == v2.numel() * 4


def reference_rows(make, history):
    """One approximator per (b, n) row, fed that row's own history of computed values."""
    refs = {}
    for b in range(SHAPE[0]):
        for n in range(SHAPE[1]):
            ap = make()
            for x, value, rows_idx in history:
                if rows_idx is None or n in rows_idx[b]:
                    ap.update(x, value[b, n])
            refs[b, n] = ap
    return refs


@pytest.mark.parametrize("make", [lambda: TaylorApproximator(2), lambda: TaylorApproximator(3),
                                  lambda: TaylorApproximator(2, scheme="taylorseer"),
                                  lambda: HermiteApproximator(2)])
def test_update_rows_keeps_per_token_anchors(make):
    """Token-wise rule: every row's forecast is the forecast from that row's own computed history."""
    g = torch.Generator().manual_seed(5)
    ap = make()
    history = []
    plan = [(0.0, None), (1.0, None), (3.0, 2), (4.5, 3), (6.0, None), (7.0, 2), (8.0, 4)]
    for x, k in plan:
        value = torch.randn(SHAPE, generator=g, dtype=torch.float64)
        if k is None:
            ap.update(x, value)
            history.append((x, value.clone(), None))  # the held c_0 is `value`; update_rows writes into it
        else:
            idx = torch.stack([torch.randperm(SHAPE[1], generator=g)[:k] for _ in range(SHAPE[0])])
            rows = torch.stack([value[b, idx[b]] for b in range(SHAPE[0])])
            ap.update_rows(x, idx, rows)
            history.append((x, value, idx.tolist()))
            out = ap.predict(x)
            for b in range(SHAPE[0]):  # fresh rows of the step's output are the computed rows
                if not isinstance(ap, HermiteApproximator):
                    close(out[b, idx[b]], rows[b], tol=1e-12)
    refs = reference_rows(make, history)
    for x in (8.0, 9.0, 11.5):
        out = ap.predict(x)
        for (b, n), ref in refs.items():
            close(out[b, n], ref.predict(x), tol=1e-9)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("kind", sorted(APPROXIMATORS))
def test_predict_rows_equals_the_rows_of_predict_before_and_after_update_rows(kind, dtype):
    """``predict_rows(x, idx)`` is ``predict(x)`` gathered at ``idx``, in idx order, with the same state change."""
    f = poly(2, seed=3, dtype=torch.float32)
    idx = torch.tensor([[4, 0, 2], [1, 5, 1]])
    pairs = [make_approximator(kind, 2 if kind in ("taylor", "hermite") else 1, dtype=dtype) for _ in range(2)]
    for x in (0.0, 1.0, 2.5):
        for a in pairs:
            a.update(x, f(x))
    for x in (3.0, 3.5):  # shared history, then per-row anchors after a partial update
        whole = pairs[0].predict(x)
        rows = pairs[1].predict_rows(x, idx)
        assert rows.shape == (2, 3, SHAPE[2]) and rows.dtype == whole.dtype
        assert torch.equal(rows, whole.gather(1, idx.unsqueeze(-1).expand(-1, -1, SHAPE[2])))
        fresh = f(x)[:, :2] + 1.0
        for a in pairs:
            a.update_rows(x, torch.tensor([[3, 1], [0, 2]]), fresh)
    assert torch.equal(pairs[0].predict(4.0), pairs[1].predict(4.0))  # the same state on both


def test_update_rows_linear_exact_and_order_grows_per_row():
    f = poly(1, seed=6)
    ap = TaylorApproximator(2)
    ap.update(0.0, f(0.0))
    idx = torch.tensor([[0, 2], [3, 5]])
    v1 = f(1.0)
    ap.update_rows(1.0, idx, torch.stack([v1[b, idx[b]] for b in range(2)]))
    assert ap._row_n.tolist() == [[2, 1, 2, 1, 1, 1], [1, 1, 1, 2, 1, 2]]
    out = ap.predict(2.0)
    fresh = torch.zeros(SHAPE[:2], dtype=torch.bool)
    fresh.scatter_(1, idx, True)
    close(out[fresh], f(2.0)[fresh])  # two anchors: the line
    close(out[~fresh], f(0.0)[~fresh])  # one anchor: reuse
    ap.update(3.0, f(3.0))  # a full update afterwards: every row on the line
    close(ap.predict(5.0), f(5.0))
    assert ap._row_n.tolist() == [[3, 2, 3, 2, 2, 2], [2, 2, 2, 3, 2, 3]]


def test_update_rows_needs_a_full_update_and_checks_shapes():
    for cls in (ReuseApproximator, TaylorApproximator, FoCaApproximator):
        ap = cls()
        with pytest.raises(RuntimeError):
            ap.update_rows(0.0, torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1, 3))
        with pytest.raises(RuntimeError):
            ap.predict(0.0)
        ap.update(0.0, torch.zeros(SHAPE))
        with pytest.raises(ValueError, match="update_rows"):
            ap.update_rows(1.0, torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 1, 3))


@pytest.mark.parametrize("kind", sorted(APPROXIMATORS))
def test_clear_resets_and_nbytes_counts_exactly(kind):
    ap = make_approximator(kind, 2 if kind in ("taylor", "hermite") else 0)
    assert not ap.ready and ap.nbytes() == 0
    f = poly(1, seed=7, dtype=torch.float32)
    elem = math.prod(SHAPE) * 4
    for x in (0.0, 1.0, 2.0, 3.0):
        ap.update(x, f(x))
    ap.predict(4.0)
    expected = {"reuse": elem, "taylor": 3 * elem, "hermite": 3 * elem, "foca": 3 * elem}[kind]  # foca: F_{k-1} is F_a
    assert ap.nbytes() == expected
    if kind in ("taylor", "hermite"):
        ap.update_rows(4.0, torch.tensor([[0], [1]]), torch.zeros(2, 1, 3))
        # float64 coordinates x_0, x_1 per row; no per-row counts: every row already holds order 2
        assert ap.nbytes() == 3 * elem + math.prod(SHAPE[:2]) * 2 * 8
        assert ap._row_n is None and ap._row_x.shape == (*SHAPE[:2], 2)
    ap.clear()
    assert not ap.ready and ap.nbytes() == 0
    ap.update(0.0, f(0.0))
    assert ap.ready
    close(ap.predict(1.0), f(0.0), tol=0)  # a fresh start: one anchor = reuse


def test_foca_nbytes_counts_an_aliased_anchor_once():
    ap = FoCaApproximator()
    v = torch.zeros(SHAPE)
    ap.update(0.0, v)
    assert ap.nbytes() == v.numel() * 4  # F_a and F_k are the same tensor


@pytest.mark.parametrize("kind", ["reuse", "taylor", "foca", "hermite"])
def test_lower_precision_storage(kind):
    ap = make_approximator(kind, 1, dtype=torch.bfloat16)
    f = poly(1, seed=8, dtype=torch.float32)
    for x in (0.0, 1.0, 2.0):
        ap.update(x, f(x))
    assert all(t.dtype == torch.bfloat16 for t in ap._tensors())
    assert ap.nbytes() == sum(t.numel() * 2 for t in {id(t): t for t in ap._tensors()}.values())
    out = ap.predict(3.0)
    assert out.dtype == torch.float32
    ref = make_approximator(kind, 1)
    for x in (0.0, 1.0, 2.0):
        ref.update(x, f(x))
    torch.testing.assert_close(out, ref.predict(3.0), rtol=0.03, atol=0.05)


def test_hermite_basis_values():
    d0 = torch.randn(SHAPE, dtype=torch.float64)
    d1 = torch.randn(SHAPE, dtype=torch.float64)
    ap = HermiteApproximator(1)
    ap.update(0.0, d0 - d1)
    ap.update(1.0, d0)  # D0 = d0, D1 = d1
    close(ap.predict(3.0), d0 + 0.5 * 2 * d1)  # H_1(s k) s = 2 s^2 k = 0.5 k at s = 0.5
    taylor, exact = TaylorApproximator(1), HermiteApproximator(1, scale=1 / math.sqrt(2))
    f = poly(1, seed=9)
    for x in (0.0, 0.5, 2.0):
        taylor.update(x, f(x))
        exact.update(x, f(x))
    close(exact.predict(4.0), f(4.0))  # s = 1/sqrt(2): exact on linear sequences
    close(exact.predict(4.0), taylor.predict(4.0))
    # order 2: D0 + D1 H1(sk) s + D2 H2(sk) s^2 / 2, with H2(t) = 4t^2 - 2
    q = lambda x: torch.full(SHAPE, float(x) ** 2, dtype=torch.float64)  # noqa: E731
    ap2 = HermiteApproximator(2)
    for x in (0.0, 1.0, 2.0):
        ap2.update(x, q(x))
    k, s = 2.0, 0.5
    expect = 4 + 3 * (2 * s * k) * s + 2 * (4 * (s * k) ** 2 - 2) * s**2 / 2  # D = (4, 3, 2)
    close(ap2.predict(2.0 + k), torch.full(SHAPE, expect, dtype=torch.float64))


@pytest.mark.parametrize("spacing", SPACINGS)
def test_foca_exact_on_linear_sequences_within_the_horizon(spacing):
    xs = SPACINGS[spacing]
    scale = abs(xs[1] - xs[0])
    f = poly(1, seed=10)
    ap = FoCaApproximator(horizon=3 * scale)
    ap.update(xs[0], f(xs[0]))
    ap.update(xs[1], f(xs[1]))
    step = xs[1] - xs[0]
    for j in (1, 2, 3):  # recursive predictions fed back into the rolling pair
        x = xs[1] + j * step
        close(ap.predict(x), f(x))
    ap.update(xs[1] + 4 * step, f(xs[1] + 4 * step))  # a full step after predictions
    close(ap.predict(xs[1] + 5.5 * step), f(xs[1] + 5.5 * step))


def test_foca_formula_horizon_damping_and_reuse_fallback():
    fa, fb = torch.randn(SHAPE, dtype=torch.float64), torch.randn(SHAPE, dtype=torch.float64)
    ap = FoCaApproximator()
    ap.update(0.0, fb)
    assert ap.predict(1.0) is fb  # one anchor: reuse, not rolled
    ap.update(2.0, fa)
    g = (fa - fb) / 2
    p1 = ap.predict(3.0)  # e = 1: F_a + (1/2)(g + g)
    close(p1, fa + g)
    p2 = ap.predict(4.0)  # e = 2: local slope from the rolled prediction
    close(p2, fa + (2 / 2) * (g + (p1 - fa) / 1))
    assert ap.predict(4.0) is p2  # same coordinate: the value already produced
    p3 = ap.predict(8.0)  # e = 6 > 3: damped toward the anchor
    gl = (p2 - p1) / 1
    close(p3, fa + (3 / 6) * (3 / 2) * (g + gl))
    # cache-dit's raw differences (no division by the spacing)
    raw = FoCaApproximator(scale_by_spacing=False)
    raw.update(0.0, fb)
    raw.update(2.0, fa)
    close(raw.predict(3.0), fa + 0.5 * ((fa - fb) + (fa - fb)))


def test_foca_update_rows_enter_the_rolling_pair_not_the_anchors():
    f = poly(1, seed=11)
    ap = FoCaApproximator()
    ap.update(0.0, f(0.0))
    ap.update(1.0, f(1.0))
    anchor = ap._a
    idx = torch.tensor([[2], [4]])
    rows = torch.randn(2, 1, 3, dtype=torch.float64)
    ap.update_rows(2.0, idx, rows)
    out = ap.predict(2.0)
    expect = f(2.0).clone()
    for b in range(2):
        expect[b, idx[b]] = rows[b]
    close(out, expect)
    assert ap._a is anchor
    close(ap._a, f(1.0), tol=0)
    g = f(1.0) - f(0.0)
    close(ap.predict(3.0), f(1.0) + (2 / 2) * (g + (expect - f(1.0))))


def test_make_approximator_registry_and_errors():
    assert isinstance(make_approximator("none"), ReuseApproximator)
    assert isinstance(make_approximator("reuse", 0), ReuseApproximator)
    assert isinstance(make_approximator("foca", 7), FoCaApproximator)  # order ignored
    ap = make_approximator("taylor", 3, dtype=torch.bfloat16, scheme="taylorseer")
    assert (ap.order, ap.dtype, ap.scheme) == (3, torch.bfloat16, "taylorseer")
    assert set(APPROXIMATORS) == {"reuse", "taylor", "foca", "hermite"}
    with pytest.raises(ValueError, match=r"forecast must be one of \['foca', 'hermite', 'none', 'reuse', 'taylor'\]"):
        make_approximator("magic")
    for bad in (0, 4, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"forecast_order must be an integer in \[1, 3\]"):
            make_approximator("taylor", bad)
    with pytest.raises(ValueError, match="forecast_order"):
        make_approximator("hermite", 4)


def test_coordinate_helper():
    ts = torch.tensor([999.0, 666.0, 333.0])
    sig = [1.0, 0.6, 0.1]
    assert coordinate("step", 2) == 2.0
    assert coordinate("timestep", 1, timesteps=ts) == 666.0
    assert coordinate("sigma", 2, sigmas=sig) == 0.1
    with pytest.raises(ValueError, match="forecast_coordinate"):
        coordinate("timestep", 0)
    with pytest.raises(ValueError, match=r"forecast_coordinate must be one of \['step', 'timestep', 'sigma'\]"):
        coordinate("log_snr", 0)


def test_affine_change_of_coordinate_gives_the_same_forecast():
    f = poly(3, seed=12)
    steps = [0.0, 1.0, 3.0, 4.0]
    for scheme in ("newton", "taylorseer"):
        a, b = make_approximator("taylor", 3, scheme=scheme), make_approximator("taylor", 3, scheme=scheme)
        for s in steps:
            a.update(s, f(s))
            b.update(999.0 - 20.0 * s, f(s))
        close(a.predict(6.0), b.predict(999.0 - 120.0), tol=1e-7)


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=40, deadline=None)
    @given(
        order=st.integers(1, 3),
        data=st.data(),
    )
    def test_property_taylor_exact_on_random_polynomials(order, data):
        degree = data.draw(st.integers(0, order))
        coef = data.draw(st.lists(st.floats(-3, 3), min_size=degree + 1, max_size=degree + 1))
        gaps = data.draw(st.lists(st.floats(0.2, 3.0), min_size=order + 2, max_size=order + 2))
        xs = [sum(gaps[:i]) for i in range(len(gaps) + 1)]
        f = lambda x: torch.full((1, 2, 1), sum(c * x**j for j, c in enumerate(coef)), dtype=torch.float64)  # noqa: E731
        ap = TaylorApproximator(order)
        for x in xs[:-1]:
            ap.update(x, f(x))
        target = xs[-1]
        scale = max(1.0, *(abs(c) for c in coef)) * max(1.0, target) ** degree
        torch.testing.assert_close(ap.predict(target), f(target), rtol=1e-7, atol=1e-8 * scale)

except ImportError:  # pragma: no cover
    pass


def test_nbytes_counts_meta_tensors_like_real_ones():
    """Full-size memory arithmetic runs on meta tensors, whose data_ptr is always 0."""
    sizes = {}
    for device in ("cpu", "meta"):
        ap = make_approximator("taylor", 2)
        for s in range(3):
            ap.update(float(s), torch.ones(2, 5, 4, device=device) * s if device == "cpu" else
                      torch.empty(2, 5, 4, device=device))
        sizes[device] = ap.nbytes()
    assert sizes["meta"] == sizes["cpu"] >= 3 * 2 * 5 * 4 * 4


@pytest.mark.parametrize("kind", ["taylor", "hermite"])
def test_differences_keep_the_value_dtype_after_per_row_updates(kind):
    """A bfloat16 model's differences stay bfloat16 whichever update came last (the divisions run in float32)."""
    ap = make_approximator(kind, 1)
    f = poly(1, seed=9, dtype=torch.float32)
    for x in (0.0, 1.0):
        ap.update(x, f(x).bfloat16())
    idx = torch.tensor([[0, 2], [3, 5]])
    ap.update_rows(2.0, idx, f(2.0).bfloat16().gather(1, idx.unsqueeze(-1).expand(-1, -1, SHAPE[2])))
    ap.update(3.0, f(3.0).bfloat16())  # a full update in per-row mode
    assert [c.dtype for c in ap._c] == [torch.bfloat16, torch.bfloat16]
    assert ap.predict(4.0).dtype == torch.bfloat16
    if kind == "taylor":  # exact on lines up to bfloat16 rounding (Hermite at scale 0.5 halves the slope)
        close(ap.predict(4.0).float(), f(4.0), tol=0.1)
