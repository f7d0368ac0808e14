"""Approximators: a module's output at a step it is not computed, from outputs computed at earlier steps.

Every place that produces a skipped output (a UNet branch returning its cached output, a transformer module
returning its cached per-token output, DuCa's aggressive steps) holds one approximator per (module, cache
context) and calls it:

* ``update(x, value)`` after a step at coordinate ``x`` where the module was fully computed;
* ``update_rows(x, idx, rows)`` after a token-wise partial step (ToCa) where only tokens ``idx`` were computed;
* ``predict(x)`` for the output at coordinate ``x`` (at or beyond the last update, in sampling direction).

Sequence on a token-wise partial step: ``update_rows(x, idx, rows)`` then ``out = predict(x)``; fresh rows of
``out`` are exactly ``rows``, the other rows are forecast (or reused).

The coordinate ``x`` is a float chosen by the caller: the step index, the timestep or the sigma (see
:func:`coordinate`). All approximators here are invariant to an affine change of coordinate (``a * x + b``)
except FoCa's horizon clamp, which is in coordinate units. Nothing here holds a module or a hook or imports
diffusers; predict/update make no host syncs (per-step scalars are Python floats from the coordinates) and
branch only on Python state (how many updates happened), so the same shapes and ops recur every step.

See ``docs/forecasting.md`` for formulas, memory and references.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from .config import COORDINATES  # one list for the config field and coordinate()
from .tokens import row_index

__all__ = [
    "APPROXIMATORS",
    "COORDINATES",
    "Approximator",
    "FoCaApproximator",
    "HermiteApproximator",
    "ReuseApproximator",
    "TaylorApproximator",
    "coordinate",
    "make_approximator",
]



def coordinate(
    kind: str,
    step_index: int,
    timesteps: Sequence[float] | torch.Tensor | None = None,
    sigmas: Sequence[float] | torch.Tensor | None = None,
) -> float:
    """The forecast coordinate of denoising step ``step_index``.

    Args:
        kind: ``"step"`` (the step index itself), ``"timestep"`` (``timesteps[step_index]``, the value the
            model is conditioned on) or ``"sigma"`` (``sigmas[step_index]``, the noise level / ODE time).
        step_index: the step counted in this call (0 = first denoising step).
        timesteps: the scheduler's timesteps (a list or a CPU tensor: a CUDA tensor would sync here).
        sigmas: the scheduler's sigmas, same convention.

    Returns:
        The coordinate as a Python float.

    On a uniform schedule (DDIM/DDPM ``linspace``/``leading`` spacing) ``timestep`` is affine in ``step`` and
    every approximator gives the same forecast (only FoCa's horizon is in coordinate units). On non-uniform
    schedules (DPM-Solver++ with Karras sigmas, flow matching with shifted sigmas, e.g. FLUX ``mu=1.15``)
    the feature is a smooth function of the ODE time, not of the step index, so a polynomial in ``sigma``
    (flow matching: diffusers' timestep is ``1000 * sigma``, an affine map, so ``timestep`` == ``sigma``)
    or in ``timestep`` (DDPM-family models conditioned on ``t``) follows the real spacing between anchors
    and targets; ``step`` mis-scales the slope by the ratio of the local spacings. Which one wins on our
    reference models is a measurement left to the caller.
    """
    if kind == "step":
        return float(step_index)
    if kind == "timestep":
        if timesteps is None:
            raise ValueError("forecast_coordinate='timestep' needs the scheduler's timesteps")
        return float(timesteps[step_index])
    if kind == "sigma":
        if sigmas is None:
            raise ValueError("forecast_coordinate='sigma' needs the scheduler's sigmas")
        return float(sigmas[step_index])
    raise ValueError(f"forecast_coordinate must be one of {list(COORDINATES)}, got {kind!r}")


def _check_rows(idx: torch.Tensor, rows: torch.Tensor) -> None:
    if idx.dim() != 2 or rows.dim() < 3 or rows.shape[:2] != idx.shape:
        raise ValueError(
            f"update_rows expects idx (B, k) and rows (B, k, C...), got {tuple(idx.shape)} and {tuple(rows.shape)}"
        )


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype for per-row arithmetic with coordinates: float32/float64 stay, half types compute in float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _bcast(t: torch.Tensor, dim: int) -> torch.Tensor:
    """A per-row ``(B, N)`` tensor viewed to broadcast against a ``dim``-dimensional ``(B, N, ...)`` value."""
    return t.view(*t.shape, *([1] * (dim - 2)))


class Approximator:
    """Produces a module's output at a step it is not computed, from outputs computed at earlier steps.

    Args:
        dtype: storage dtype of the held tensors (e.g. ``torch.bfloat16`` to halve memory); ``None`` keeps
            the value's dtype. Predictions are cast back to the dtype of the last updated value.
    """

    name: ClassVar[str] = ""
    #: allowed ``forecast_order`` range (inclusive), or ``None`` when the order is ignored.
    orders: ClassVar[tuple[int, int] | None] = None

    def __init__(self, order: int = 0, *, dtype: torch.dtype | None = None) -> None:
        self.order = order
        self.dtype = dtype
        self._out_dtype: torch.dtype | None = None

    def _store(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.dtype is None else t.to(self.dtype)

    def _out(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self._out_dtype)

    def update(self, x: float, value: torch.Tensor) -> None:
        """Record ``value``, the module's fully computed output at coordinate ``x``."""
        raise NotImplementedError

    def predict(self, x: float) -> torch.Tensor:
        """The module's output at coordinate ``x`` (at or beyond the last update)."""
        raise NotImplementedError

    def update_rows(self, x: float, idx: torch.Tensor, rows: torch.Tensor) -> None:
        """Record tokens ``idx`` (``(B, k)``) computed at coordinate ``x`` as ``rows`` (``(B, k, C...)``).

        The held value is ``(B, N, C...)`` with tokens on dim 1. Needs a previous full ``update``.
        """
        raise NotImplementedError

    def predict_rows(self, x: float, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` (``(B, k)``) of :meth:`predict` ``(x)``: ``(B, k, C...)``, in ``idx`` order.

        Same values and the same state change as ``predict(x)``; subclasses compute only those rows.
        """
        out = self.predict(x)
        return out.gather(1, row_index(idx, out))

    @property
    def ready(self) -> bool:
        """Whether at least one update happened since construction or :meth:`clear`."""
        raise NotImplementedError

    def clear(self) -> None:
        """Drop every held tensor (per-call / per-context reset)."""
        raise NotImplementedError

    def _tensors(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def shares(self, t: Any) -> bool:
        """Whether ``t`` is one of the tensors held (writing into it changes this approximator's state)."""
        return any(t is h for h in self._tensors())

    def nbytes(self) -> int:
        """Bytes of the distinct tensors held (``numel * element_size``; one tensor held twice counts once)."""
        # meta tensors (full-size memory arithmetic) all have data_ptr 0: tell them apart by identity
        seen = {(t.data_ptr() if t.device.type != "meta" else id(t), t.device, t.dtype, tuple(t.shape)):
                t.numel() * t.element_size() for t in self._tensors()}
        return sum(seen.values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(order={self.order}, dtype={self.dtype})"


class ReuseApproximator(Approximator):
    """Today's behaviour: the last computed output, returned as the same tensor object (no copy).

    ``update_rows`` scatters the fresh rows into the held tensor in place, as today's ToCa cache does.
    With a ``dtype`` differing from the value's, the held copy is cast and ``predict`` returns a cast-back
    copy (identity is then lost). The order is ignored.
    """

    name = "reuse"
    orders = None

    def __init__(self, order: int = 0, *, dtype: torch.dtype | None = None) -> None:
        super().__init__(order, dtype=dtype)
        self._value: torch.Tensor | None = None

    def update(self, x: float, value: torch.Tensor) -> None:
        self._out_dtype = value.dtype
        self._value = self._store(value)

    def predict(self, x: float) -> torch.Tensor:
        if self._value is None:
            raise RuntimeError("predict needs an update first")
        return self._value if self._value.dtype == self._out_dtype else self._out(self._value)

    def predict_rows(self, x: float, idx: torch.Tensor) -> torch.Tensor:
        if self._value is None:
            raise RuntimeError("predict needs an update first")
        return self._out(self._value.gather(1, row_index(idx, self._value)))

    def update_rows(self, x: float, idx: torch.Tensor, rows: torch.Tensor) -> None:
        _check_rows(idx, rows)
        if self._value is None:
            raise RuntimeError("update_rows needs a full update first")
        v = self._value
        v.scatter_(1, row_index(idx, rows), rows.to(v.dtype))

    @property
    def ready(self) -> bool:
        return self._value is not None

    def clear(self) -> None:
        self._value = None

    def _tensors(self) -> list[torch.Tensor]:
        return [] if self._value is None else [self._value]


class TaylorApproximator(Approximator):
    """Finite-difference Taylor forecast (TaylorSeer) of order 1-3, exact on polynomials (default scheme).

    State after updates at ``x_0 > x_1 > ... `` (newest first; any monotone direction works): the Newton
    backward divided differences ``c_i = f[x_0, ..., x_i]`` for ``i <= m = min(order, updates - 1)``, i.e.
    ``m + 1`` tensors. On an update at ``x``: ``c'_0 = F``, ``c'_i = (c'_{i-1} - c_{i-1}) / (x - x_{i-1})``.
    The forecast is the interpolating polynomial through the last ``m + 1`` anchors::

        predict(x) = sum_i c_i * prod_{j<i} (x - x_j) = sum_i d^(i) (x - x_0)^i / i!

    (the same polynomial in Newton and Taylor form, ``d^(i)`` its derivatives at the newest anchor). It is
    exact on polynomials of degree <= m at any spacing. With fewer than ``order + 1`` updates the order is
    reduced to what exists (one update = reuse).

    ``scheme="taylorseer"`` reproduces the authors' code instead: ``D_i = (D_{i-1,new} - D_{i-1,old}) / dx``
    with ``dx = x - x_prev`` (the last spacing) for every order and ``predict = sum_i D_i (x - x_0)^i / i!``.
    It equals the default at order 1; at order >= 2 it is exact on no quadratic (D_1 is the backward
    difference, not the derivative at x_0) and mixes spacings when they are unequal.

    Token-wise rule (``update_rows``): per-token anchors. Each token row keeps its own divided differences
    and the coordinates of its last ``order`` updates (the oldest anchor's coordinate is never read); a
    fresh row at ``x`` is pushed into its own Newton table exactly as a full update would (spacing ``x``
    minus that row's previous coordinates), the other rows are untouched. So every row's forecast stays the
    interpolant of that row's own computed history (exact on polynomials per row), fresh rows of
    ``predict(x)`` equal the computed rows, and at order 0 (one update) it is today's ToCa
    reuse-and-scatter. The per-row coordinates cost ``B * N * order`` scalars, allocated at the first
    ``update_rows`` (plus ``B * N`` per-row counts when fewer than ``order`` updates preceded it).
    As with reuse, ``c_0`` is the updated tensor itself (no copy unless ``dtype`` differs) and
    ``update_rows`` writes the fresh rows into it in place.

    The alternative, not implemented: differences refreshed only by full updates, fresh rows only overwriting
    the step's output; it forgets fresh rows at the next step. Writing them into ``D_0`` only (TaylorSeer-FLUX's
    ToCa path, ClusCa) counts the drift twice on those rows and biases the next full update's differences.

    Args:
        order: maximum order, 1-3.
        scheme: ``"newton"`` (default, exact divided differences) or ``"taylorseer"`` (the authors' recursion).
        dtype: storage dtype of the differences (e.g. ``torch.bfloat16``); predictions use the value's dtype.
    """

    name = "taylor"
    orders = (1, 3)
    schemes: ClassVar[tuple[str, ...]] = ("newton", "taylorseer")

    def __init__(self, order: int = 1, *, scheme: str = "newton", dtype: torch.dtype | None = None) -> None:
        super().__init__(order, dtype=dtype)
        if scheme not in self.schemes:
            raise ValueError(f"forecast_scheme must be one of {list(self.schemes)}, got {scheme!r}")
        self.scheme = scheme
        self.clear()

    def clear(self) -> None:
        self._c: list[torch.Tensor] = []  # c_0..c_m (stored dtype)
        self._xs: list[float] = []  # coordinates of the last updates, newest first (shared by every row)
        # per-row coordinates (B, N, order), newest first: the spacings and the basis read x_0..x_{order-1}
        self._row_x: torch.Tensor | None = None
        # (B, N) number of valid differences per row; None while every row holds at least ``order`` (then
        # every difference the recursion forms is valid: no mask to keep or apply)
        self._row_n: torch.Tensor | None = None

    @property
    def ready(self) -> bool:
        return bool(self._c)

    def _tensors(self) -> list[torch.Tensor]:
        extra = [t for t in (self._row_x, self._row_n) if t is not None]
        return [*self._c, *extra]

    # -- the difference recursion and the basis, shared by both modes (float or per-row tensor coordinates)
    def _spacing(self, x: float, xs: list[Any], i: int) -> Any:
        """Denominator of the i-th difference (i >= 1) for a new point at x, given previous coordinates xs."""
        return x - (xs[i - 1] if self.scheme == "newton" else xs[0])

    def _weights(self, x: float, xs: list[Any], m: int) -> list[Any]:
        """Basis values w_0..w_{m-1} at x for anchors xs (newest first)."""
        w: list[Any] = [1.0]
        for i in range(1, m):
            if self.scheme == "newton":  # (w_0 = 1 is not multiplied: one kernel less per forecast)
                w.append((x - xs[0]) if i == 1 else w[-1] * (x - xs[i - 1]))
            else:
                w.append((x - xs[0]) ** i / math.factorial(i))
        return w

    def _push(self, x: float, new: torch.Tensor, old: list[torch.Tensor], xs: list[Any], valid: list[Any]) -> list:
        """New differences for a point (x, new) on top of ``old`` (value dtype); ``valid[i]`` masks per row."""
        out = [new]
        for i in range(1, min(len(old) + 1, self.order + 1)):
            d = self._spacing(x, xs, i)
            if isinstance(d, torch.Tensor):
                d = _bcast(d, new.dim()).to(_compute_dtype(new.dtype))
            nxt = torch.sub(out[-1], old[i - 1])
            # in place where the quotient keeps the difference's dtype: full updates run this on every output
            nxt = nxt.div_(d) if not isinstance(d, torch.Tensor) or d.dtype == nxt.dtype else nxt / d
            if valid[i] is not None:
                nxt = nxt.masked_fill_(~valid[i], 0)
            out.append(nxt)
        return out

    def update(self, x: float, value: torch.Tensor) -> None:
        self._out_dtype = value.dtype
        x = float(x)
        if self._row_x is not None:
            self._update_per_row(x, None, value)
            return
        old = [c.to(value.dtype) for c in self._c]
        new = self._push(x, value, old, self._xs, [None] * (self.order + 1))
        self._c = [self._store(c) for c in new]
        self._xs = [x, *self._xs][: self.order + 1]

    def update_rows(self, x: float, idx: torch.Tensor, rows: torch.Tensor) -> None:
        _check_rows(idx, rows)
        if not self._c:
            raise RuntimeError("update_rows needs a full update first")
        if self._row_x is None:  # switch to per-row anchors: every row shares the history so far
            ref = self._c[0]
            n, k = ref.shape[:2], self.order
            coords = (self._xs + [self._xs[-1]] * k)[:k]
            cdt = torch.float32 if ref.device.type == "mps" else torch.float64
            self._row_x = torch.tensor(coords, dtype=cdt, device=ref.device).expand(*n, k).contiguous()
            if len(self._c) < self.order:  # some difference may be missing in a row: count them per row
                self._row_n = torch.full(n, len(self._c), dtype=torch.int8, device=ref.device)
        self._update_per_row(float(x), idx, rows)

    def _update_per_row(self, x: float, idx: torch.Tensor | None, new: torch.Tensor) -> None:
        """Push (x, new) into the rows ``idx`` (all rows if None) of the per-row Newton tables."""
        od = self._out_dtype
        k, row_n = self.order, self._row_n
        if idx is None:
            old = [c.to(od) for c in self._c]
            old_x, old_n = self._row_x, row_n
        else:
            ri = row_index(idx, new)
            # the recursion reads c_0 .. c_{order-1} only: the highest difference is replaced, never read
            old = [c.gather(1, ri).to(od) for c in self._c[:k]]
            old_x = self._row_x.gather(1, row_index(idx, self._row_x))
            old_n = None if row_n is None else row_n.gather(1, idx)
        xs = [old_x[..., j] for j in range(k)]
        valid = [None] * (k + 1) if old_n is None else [None] + [_bcast(old_n >= i, new.dim()) for i in range(1, k + 1)]
        diffs = self._push(x, new.to(od), old, xs, valid)
        # the new coordinate first, the older ones shift by one (order 1 with rows: written as a scalar below)
        new_x = None
        if k > 1 or idx is None:
            new_x = torch.full_like(old_x[..., :1], x)
            new_x = torch.cat([new_x, old_x[..., :-1]], dim=-1) if k > 1 else new_x
        new_n = None if old_n is None else (old_n + 1).clamp_(max=k + 1)
        if idx is None:
            # differences divided in float32 are stored in the value's dtype like the shared-history ones (or the
            # storage dtype): a bfloat16 model keeps bfloat16 differences whichever update came last
            self._c = [self._store(c) if self.dtype is not None else c.to(od) for c in diffs]
            self._row_x, self._row_n = new_x, new_n
            return
        if len(diffs) > len(self._c):  # a new order appears: zero for rows that have not got it
            self._c.append(torch.zeros_like(self._c[0]))
        for c, d in zip(self._c, diffs):
            c.scatter_(1, ri, d.to(c.dtype))
        if k == 1:  # the one coordinate is x itself
            self._row_x.scatter_(1, row_index(idx, self._row_x), x)
        else:
            self._row_x.scatter_(1, row_index(idx, self._row_x), new_x)
        if row_n is not None:
            row_n.scatter_(1, idx, new_n)

    def predict(self, x: float) -> torch.Tensor:
        return self._forecast(float(x), None)

    def predict_rows(self, x: float, idx: torch.Tensor) -> torch.Tensor:
        return self._forecast(float(x), idx)

    def _forecast(self, x: float, idx: torch.Tensor | None) -> torch.Tensor:
        """The forecast at ``x``: every row, or only rows ``idx`` (gathered before any arithmetic)."""
        if not self._c:
            raise RuntimeError("predict needs an update first")
        c, od, row_x = self._c, self._out_dtype, self._row_x
        if idx is not None:
            ti = row_index(idx, c[0])
            c = [ci.gather(1, ti) for ci in c]
            if row_x is not None:
                row_x = row_x.gather(1, row_index(idx, row_x))
        if row_x is None:
            w = self._weights(x, self._xs, len(c))
        else:
            xs = [row_x[..., j] for j in range(self.order)]
            wdt = _compute_dtype(od)
            w = [1.0] + [_bcast(wi, c[0].dim()).to(wdt) for wi in self._weights(x, xs, len(c))[1:]]
        out = c[0] if c[0].dtype == od else self._out(c[0])
        for i in range(1, len(c)):
            term = c[i].to(od)
            if isinstance(w[i], torch.Tensor):
                if w[i].dtype == od:  # one fused pass (no temporary): this runs on every cached output per step
                    out = torch.addcmul(out, term, w[i]) if i == 1 else out.addcmul_(term, w[i])
                    continue
                term = (term.to(w[i].dtype) * w[i]).to(od)
                out = out + term if i == 1 else out.add_(term)
            else:
                out = torch.add(out, term, alpha=w[i]) if i == 1 else out.add_(term, alpha=w[i])
        return out

    def derivatives(self) -> list[torch.Tensor]:
        """Taylor coefficients ``d^(i)`` at the newest anchor (shared-history mode only), value dtype."""
        if self._row_x is not None:
            raise RuntimeError("derivatives() is per row after update_rows; use predict")
        c = [t.to(self._out_dtype) for t in self._c]
        if self.scheme == "taylorseer":
            return c
        # prod_{j<i} (h + a_j) with a_j = x_0 - x_j, expanded in powers of h
        a = [self._xs[0] - xj for xj in self._xs]
        d = [torch.zeros_like(c[0]) for _ in c]
        poly = [1.0]
        for i, ci in enumerate(c):
            for m, pm in enumerate(poly):
                d[m] = d[m] + pm * math.factorial(m) * ci
            if i < len(a):
                poly = [(poly[m - 1] if m else 0.0) + (poly[m] * a[i] if m < len(poly) else 0.0)
                        for m in range(len(poly) + 1)]
        return d


class HermiteApproximator(TaylorApproximator):
    """HiCache: TaylorSeer's differences on a scaled Hermite basis instead of monomials.

    ``predict(x) = D_0 + sum_{j>=1} D_j * H_j(s k) * s^j / j!`` with ``k = x - x_0``, ``H_j`` the physicists'
    Hermite polynomials (``H_1 = 2t``, ``H_2 = 4t^2 - 2``, ``H_3 = 8t^3 - 12t``) and ``s = scale`` (HiCache's
    ``hicache_scale_factor``, 0.5). The differences are TaylorSeer's (``scheme="taylorseer"``). At ``s = 0.5``
    the slope term is ``0.5 k D_1`` (halved) and ``H_2`` adds ``-0.25 D_2`` even at ``k = 0``; at
    ``s = 1/sqrt(2)`` order 1 equals Taylor order 1 (exact on linear sequences). Token-wise rule: per-token
    anchors, as :class:`TaylorApproximator`.

    Args:
        order: maximum order, 1-3.
        scale: the Hermite argument and coefficient scale ``s``.
        dtype: storage dtype of the differences.
    """

    name = "hermite"
    orders = (1, 3)

    def __init__(self, order: int = 1, *, scale: float = 0.5, dtype: torch.dtype | None = None) -> None:
        super().__init__(order, scheme="taylorseer", dtype=dtype)
        self.scale = float(scale)

    def _weights(self, x: float, xs: list[Any], m: int) -> list[Any]:
        s = self.scale
        t = (x - xs[0]) * s
        h_prev, h = 1.0, 2 * t  # H_0, H_1
        w: list[Any] = [1.0]
        for j in range(1, m):
            w.append(h * s**j / math.factorial(j))
            h_prev, h = h, 2 * t * h - 2 * j * h_prev
        return w


class FoCaApproximator(Approximator):
    """FoCa (forecast-then-calibrate) as cache-dit implements it: a BDF2-style predictor, Heun-style corrector.

    State: the last two computed anchors ``F_a`` (at ``x_a``), ``F_b`` (at ``x_b``, older) and the rolling
    pair of the last two *produced* values ``F_k`` (``x_k``), ``F_{k-1}`` (``x_{k-1}``): computed, or predicted
    and fed back (the forecast is recursive). With ``e = x - x_a``, ``g_a = (F_a - F_b) / (x_a - x_b)`` and
    ``g_k = (F_k - F_{k-1}) / (x_k - x_{k-1})``::

        |e| <= H:  F = F_a + (e / 2) (g_a + g_k)
        |e| >  H:  w = H / |e|,  F = F_a + w (sign(e) H / 2) (g_a + g_k)     (damped toward the anchor)

    with ``H = horizon`` (3, cache-dit's clamp, in coordinate units; ``None`` disables it). Holds up to four
    tensors. Exact on linear sequences for ``|e| <= H`` at any spacing; with one anchor it reuses ``F_a``.

    Deviations from cache-dit (``calibrators/foca.py``), documented in ``docs/forecasting.md``:
    the differences are divided by their coordinate spacing (cache-dit divides neither; pass
    ``scale_by_spacing=False`` with the step coordinate to reproduce it, exact only for adjacent full steps);
    predictions made while only one anchor exists are plain reuse and are not fed into the rolling pair
    (so the first forecast after two full updates uses computed values only).

    Token-wise rule (``update_rows``): fresh rows are written into the value produced at ``x`` (the forecast
    elsewhere), which becomes the rolling ``F_k``: they enter the local slope ``g_k`` of the next steps; the
    anchors are refreshed only by full updates. With one anchor (reuse) they are scattered into it in place.

    Args:
        horizon: clamp of the extrapolation distance, in coordinate units, or ``None``.
        scale_by_spacing: divide the differences by their coordinate spacing (default) or not (cache-dit).
        dtype: storage dtype; predictions use the value's dtype.
    """

    name = "foca"
    orders = None

    def __init__(
        self,
        order: int = 0,
        *,
        horizon: float | None = 3.0,
        scale_by_spacing: bool = True,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(order, dtype=dtype)
        self.horizon = None if horizon is None else float(horizon)
        self.scale_by_spacing = scale_by_spacing
        self.clear()

    def clear(self) -> None:
        self._a: torch.Tensor | None = None
        self._b: torch.Tensor | None = None
        self._k: torch.Tensor | None = None
        self._km1: torch.Tensor | None = None
        self._xa = self._xb = self._xk = self._xkm1 = 0.0

    @property
    def ready(self) -> bool:
        return self._a is not None

    def _tensors(self) -> list[torch.Tensor]:
        return [t for t in (self._a, self._b, self._k, self._km1) if t is not None]

    def update(self, x: float, value: torch.Tensor) -> None:
        self._out_dtype = value.dtype
        x = float(x)
        v = self._store(value)
        self._b, self._xb = self._a, self._xa
        self._a, self._xa = v, x
        self._km1, self._xkm1 = self._k, self._xk
        self._k, self._xk = v, x

    def _slope(self, new: torch.Tensor, old: torch.Tensor, dx: float) -> torch.Tensor:
        d = new.to(self._out_dtype) - old.to(self._out_dtype)
        return d / dx if self.scale_by_spacing else d

    def predict(self, x: float) -> torch.Tensor:
        if self._a is None:
            raise RuntimeError("predict needs an update first")
        x = float(x)
        if self._b is None:  # one anchor: reuse (not rolled)
            return self._a if self._a.dtype == self._out_dtype else self._out(self._a)
        if x == self._xk:  # the value already produced at x (an anchor or a prediction with fresh rows)
            return self._k if self._k.dtype == self._out_dtype else self._out(self._k)
        e = x - self._xa
        g = self._slope(self._a, self._b, self._xa - self._xb) + self._slope(self._k, self._km1, self._xk - self._xkm1)
        if self.horizon is not None and abs(e) > self.horizon:
            coef = (self.horizon / abs(e)) * math.copysign(self.horizon, e) / 2
        else:
            coef = e / 2
        out = torch.add(self._out(self._a), g, alpha=coef)
        self._km1, self._xkm1 = self._k, self._xk
        self._k, self._xk = self._store(out), x
        return out

    def update_rows(self, x: float, idx: torch.Tensor, rows: torch.Tensor) -> None:
        _check_rows(idx, rows)
        if self._a is None:
            raise RuntimeError("update_rows needs a full update first")
        if self._b is None:
            self._a.scatter_(1, row_index(idx, rows), rows.to(self._a.dtype))
            return
        x = float(x)
        if x != self._xk:
            self.predict(x)
        if self._k is self._a:  # never write fresh rows into an anchor
            self._k = self._k.clone()
        self._k.scatter_(1, row_index(idx, rows), rows.to(self._k.dtype))


APPROXIMATORS: dict[str, type[Approximator]] = {
    cls.name: cls for cls in (ReuseApproximator, TaylorApproximator, FoCaApproximator, HermiteApproximator)
}
#: ``forecast`` values accepted by :func:`make_approximator` besides the registry keys.
ALIASES: dict[str, str] = {"none": "reuse"}


def make_approximator(kind: str, order: int = 1, **options: Any) -> Approximator:
    """Build the approximator registered as ``kind`` (a config's ``forecast``) of order ``forecast_order``.

    Args:
        kind: ``"none"``/``"reuse"``, ``"taylor"``, ``"foca"`` or ``"hermite"``.
        order: ``forecast_order``; taylor and hermite take 1-3, reuse and foca ignore it.
        **options: keyword options of the class (``dtype``, ``scheme``, ``horizon``, ``scale``, ...).

    Raises:
        ValueError: naming ``forecast`` (unknown kind) or ``forecast_order`` (out of range) and the allowed values.
    """
    allowed = sorted([*APPROXIMATORS, *ALIASES])
    key = ALIASES.get(kind, kind) if isinstance(kind, str) else None
    if key not in APPROXIMATORS:
        raise ValueError(f"forecast must be one of {allowed}, got {kind!r}")
    cls = APPROXIMATORS[key]
    if cls.orders is not None:
        lo, hi = cls.orders
        if isinstance(order, bool) or not isinstance(order, int) or not lo <= order <= hi:
            raise ValueError(f"forecast_order must be an integer in [{lo}, {hi}] for forecast={kind!r}, got {order!r}")
    return cls(order, **options)
