"""Per-step plans: what each denoising step does.

A plan is a list of :class:`StepAction`, one per denoiser call. Plans are written for some number of
steps (the length of a preset's list) and mapped to any ``num_inference_steps`` by relative position,
so a 50-step strategy also drives a 20- or 75-step run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

#: The step kinds of the shipped methods. "full" computes everything and refreshes caches; "partial"
#: computes part of the model (a UNet branch, or a token subset); "reuse" returns the previous output;
#: "aggressive" (DuCa) skips every transformer block but still runs the model's input and output layers.
#: Kinds are open: a method may plan steps of a kind of its own (the summary counts every kind it sees).
STEP_KINDS = ("full", "partial", "reuse", "aggressive")


@dataclass(frozen=True)
class StepAction:
    """What one denoiser call does.

    Args:
        kind: the step kind, one of ``STEP_KINDS`` for the shipped methods (open for new methods).
        depth: UNet branch depth for ``"partial"`` UNet steps (blocks deeper than this return cached
            outputs); ``None`` otherwise.
        ratio: pruning ratio (DaTo/ToMe) or fresh-token ratio (ToCa/DuCa) for this step.
    """

    kind: str
    depth: int | None = None
    ratio: float = 0.0

    @property
    def computes(self) -> bool:
        """Whether the denoiser produces a new output on this step (not a whole-output reuse)."""
        return self.kind != "reuse"


def resample(plan: Sequence[T], num_steps: int) -> list[T]:
    """Map a plan written for ``len(plan)`` steps onto ``num_steps`` steps by relative position.

    Step ``i`` of ``num_steps`` takes entry ``floor(i * len(plan) / num_steps)``, so step 0 always maps
    to entry 0 and the order of the plan is kept.

    Args:
        plan: the per-step entries as written.
        num_steps: the number of denoiser calls of the run.

    Returns:
        A list of ``num_steps`` entries.

    Example:
        >>> resample(["full", "reuse"], 4)
        ['full', 'full', 'reuse', 'reuse']
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} is invalid; it must be a positive integer")
    if not plan:
        raise ValueError("plan is empty; it needs at least one step")
    n = len(plan)
    return [plan[(i * n) // num_steps] for i in range(num_steps)]


def resample_plan(plan: Sequence[T], num_steps: int, full: object = "full") -> list[T]:
    """Map a cache plan to ``num_steps`` steps, keeping the *share* of full steps.

    Plain :func:`resample` aliases periodic plans (a full step every 5 of 50 sampled at 10 steps lands
    on every full entry). Here the number of full steps is ``round(n_full * num_steps / len(plan))``
    (at least 1), placed at the relative positions of the plan's full entries (interpolated); every
    other step takes the most common non-full entry of the stretch of the plan it covers (the
    first on ties), or the nearest non-full entry when that stretch holds only full entries.

    Args:
        plan: entries; ``full`` marks a full step and ``plan[0]`` should be one.
        num_steps: the number of denoiser calls.
        full: the value that marks a full step.

    Returns:
        ``num_steps`` entries.
    """
    base = resample(plan, num_steps)
    n = len(plan)
    full_pos = [i for i, e in enumerate(plan) if e == full]
    others = [i for i, e in enumerate(plan) if e != full]
    if not full_pos or not others:
        return base
    m = max(1, min(num_steps, round(len(full_pos) * num_steps / n)))
    ext = [*full_pos, n]  # the plan's end acts as the next full position when interpolating
    chosen: list[int] = []
    for j in range(m):
        u = j * len(full_pos) / m
        lo = int(u)
        pos = ext[lo] + (u - lo) * (ext[lo + 1] - ext[lo])
        q = min(num_steps - 1, round(pos * num_steps / n))
        if chosen and q <= chosen[-1]:
            q = chosen[-1] + 1
        if q < num_steps:
            chosen.append(q)
    fulls = set(chosen)
    out: list[T] = []
    for i in range(num_steps):
        if i in fulls:
            out.append(plan[full_pos[0]])
            continue
        lo, hi = (i * n) // num_steps, max((i * n) // num_steps + 1, ((i + 1) * n) // num_steps)
        window = [e for e in plan[lo:hi] if e != full]
        if not window:  # only full entries here: take the nearest other entry
            p = min(others, key=lambda k: (abs(k - lo), k))
            window = [plan[p]]
        out.append(max(window, key=lambda e: (window.count(e), -window.index(e))))
    return out


def count_kinds(actions: Sequence[StepAction]) -> dict[str, int]:
    """Number of steps of each kind in ``actions``: every kind of ``STEP_KINDS`` as a key, plus any other seen."""
    counts = dict.fromkeys(STEP_KINDS, 0)
    for a in actions:
        counts[a.kind] = counts.get(a.kind, 0) + 1
    return counts
