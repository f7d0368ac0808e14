"""Scores one candidate config: cost (MACs, modelled or measured latency) and quality against the uncached run.

The prompts and seeds are fixed once for the whole search (never re-drawn per candidate, unlike the DaTo
authors' search), each prompt keeps its own seed and output (prompt/image alignment), and the uncached
outputs are computed once and cached in a ``.pt`` file so a resumed search does not recompute them.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..harness.pipeline_io import run_pipeline, takes_class_labels
from ..harness.registry import BaseConfig, DaToConfig, apply, remove, summary
from .objectives import COST_OBJECTIVES, OBJECTIVES  # noqa: F401  (re-exported)


@dataclass
class EvalSettings:
    """What every candidate is run on: fixed for the whole search.

    Args:
        prompts: prompts or class labels, one per sample.
        seeds: one seed per sample.
        steps: ``num_inference_steps``.
        guidance_scale: CFG scale; ``None`` = the pipeline's default.
        batch_size: samples per pipeline call.
        fidelity_on: ``"latent"`` (compare latents, no VAE decode) or ``"image"`` (decoded images in [0, 1]).
    """

    prompts: list[Any]
    seeds: list[int]
    steps: int
    guidance_scale: float | None = None
    batch_size: int = 8
    fidelity_on: str = "latent"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.seeds) or not self.prompts:
            raise ValueError(f"{len(self.prompts)} prompts and {len(self.seeds)} seeds; need equal, non-zero counts")
        if self.fidelity_on not in ("latent", "image"):
            raise ValueError(f"fidelity_on={self.fidelity_on!r} is invalid; allowed: 'latent', 'image'")
        if self.steps < 1:
            raise ValueError(f"steps={self.steps} is invalid; allowed: >= 1")

    def key(self) -> str:
        """Hash of the settings (names the baseline cache file)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:12]


class Evaluator:
    """Runs candidates on fixed inputs and scores them.

    Args:
        pipe: the diffusers pipeline (uncached; tokencache is applied and removed per candidate).
        settings: the fixed inputs.
        cache_dir: folder for the baseline outputs (``baseline_<key>.pt``) and the latency calibration;
            ``None`` keeps them in memory only.
        objectives: names from :data:`OBJECTIVES` that will be asked for.
        fd_stats: ``.npz`` (``mu``, ``sigma``) reference statistics in the digit classifier's features, for ``fd``.
        clip_model: local CLIP folder, for ``clip``.

    Example:
        >>> ev = Evaluator(pipe, EvalSettings(["a handwritten 3"] * 4, [0, 1, 2, 3], steps=20))
        >>> ev.evaluate(tc.DaToConfig.preset("fast"))["psnr"]
    """

    def __init__(
        self,
        pipe: Any,
        settings: EvalSettings,
        cache_dir: str | Path | None = None,
        objectives: tuple[str, ...] = ("macs", "psnr"),
        fd_stats: str | Path | None = None,
        clip_model: str | Path | None = None,
    ) -> None:
        bad = [o for o in objectives if o not in OBJECTIVES]
        if bad:
            raise ValueError(f"objectives {bad} are unknown; allowed: {list(OBJECTIVES)}")
        self.pipe, self.settings, self.objectives = pipe, settings, tuple(objectives)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.needs_images = settings.fidelity_on == "image" or any(o in ("fd", "clip") for o in objectives)
        self.fd_stats = None
        if "fd" in objectives:
            if fd_stats is None:
                raise ValueError("objective 'fd' needs fd_stats (an .npz of reference features from tokencache eval)")
            from ..metrics import load_stats

            self.fd_stats = load_stats(fd_stats)
        self.clip_model = clip_model
        if "clip" in objectives and clip_model is None:
            raise ValueError("objective 'clip' needs clip_model (a local CLIP folder)")
        self._decoded = takes_class_labels(pipe)  # DiTPipeline returns images, never latents
        self._baseline: dict[str, torch.Tensor] | None = None
        self._baseline_wall: float | None = None
        self._step_costs: dict[str, float] | None = None

    # ---- baseline -----------------------------------------------------------------------------------
    def _run(self, config: BaseConfig | None) -> tuple[dict[str, torch.Tensor], float, float]:
        """Outputs ``{"latent": ..., "image": ...}``, MACs ratio and wall time of one pass over the samples."""
        s = self.settings
        if config is not None:
            apply(self.pipe, config)
        outs: dict[str, list[torch.Tensor]] = {"latent": []}
        if self.needs_images:
            outs["image"] = []
        macs, wall = [], 0.0
        try:
            for lo in range(0, len(s.prompts), s.batch_size):
                p, sd = s.prompts[lo: lo + s.batch_size], s.seeds[lo: lo + s.batch_size]
                t0 = time.perf_counter()
                lat = run_pipeline(self.pipe, p, sd, s.steps, s.guidance_scale, "latent", s.extra)
                wall += time.perf_counter() - t0
                outs["latent"].append(lat.detach().float().cpu())
                if config is not None:
                    macs.append(summary(self.pipe).macs_ratio)
                if self.needs_images:
                    outs["image"].append(lat.detach().float().cpu() if self._decoded else self._decode(lat).cpu())
        finally:
            if config is not None:
                remove(self.pipe)
        return {k: torch.cat(v) for k, v in outs.items()}, (sum(macs) / len(macs) if macs else 1.0), wall

    @torch.no_grad()
    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode latents to images in [0, 1] the way the pipeline does (DiT/SD/PixArt VAEs)."""
        vae = self.pipe.vae
        lat = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor
        img = vae.decode(lat).sample
        return (img / 2 + 0.5).clamp(0, 1).float()

    @property
    def baseline(self) -> dict[str, torch.Tensor]:
        """The uncached outputs (computed once; loaded from the cache file when it exists)."""
        if self._baseline is None:
            path = self.cache_dir / f"baseline_{self.settings.key()}.pt" if self.cache_dir else None
            data = torch.load(path, weights_only=True) if path is not None and path.is_file() else None
            if data is None or (self.needs_images and "image" not in data):
                out, _, _ = self._run(None)
                data = dict(out)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_name(path.name + ".tmp")
                    torch.save(data, tmp)
                    tmp.replace(path)
            self._baseline = data
        return self._baseline

    @property
    def baseline_wall(self) -> float:
        """Seconds of one uncached pass, timed in this process after a warm-up pass.

        Never taken from the cache file (another process, load or machine) nor from a first, cold pass,
        so that the ``latency`` of a candidate is a ratio of two warm runs of the same process.
        """
        if self._baseline_wall is None:
            _ = self.baseline
            self._run(None)  # warm-up: the first pass of a process pays one-off costs
            self._baseline_wall = self._run(None)[2]
        return self._baseline_wall

    # ---- latency model ------------------------------------------------------------------------------
    def calibrate(self, space_actions: list[tuple[str, int | None, float]], n: int = 10) -> dict[str, float]:
        """Time each DaTo step action once on this device: seconds per step, keyed ``"kind:depth:ratio"``.

        Each action ``a`` runs as the plan ``["full", a, a, ...]`` of ``n`` steps; its per-step time is
        ``(wall - t_full) / (n - 1)`` with ``t_full`` from an all-full run. Stored in ``latency_<key>.json``.
        """
        if self._step_costs is not None:
            return self._step_costs
        path = self.cache_dir / f"latency_{self.settings.key()}.json" if self.cache_dir else None
        if path is not None and path.is_file():
            self._step_costs = json.loads(path.read_text())
            return self._step_costs
        saved = self.settings
        self.settings = EvalSettings(saved.prompts[: saved.batch_size], saved.seeds[: saved.batch_size], n,
                                     saved.guidance_scale, saved.batch_size, "latent", saved.extra)
        needs, self.needs_images = self.needs_images, False
        try:
            self._run(DaToConfig(cache_plan=["full"], prune_ratio=0.0))  # warm-up
            t_full = self._run(DaToConfig(cache_plan=["full"], prune_ratio=0.0))[2] / n
            costs = {"full:0:0.0": t_full}
            for kind, depth, ratio in space_actions:
                entry = kind if kind in ("full", "reuse") else depth
                cfg = DaToConfig(cache_plan=["full"] + [entry] * (n - 1), prune_ratio=[0.0] + [ratio] * (n - 1))
                wall = self._run(cfg)[2]
                costs[f"{kind}:{depth or 0}:{ratio}"] = max((wall - t_full) / (n - 1), 0.0)
        finally:
            self.settings, self.needs_images = saved, needs
        self._step_costs = costs
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(costs, indent=1))
        return costs

    def modelled_latency(self, config: BaseConfig) -> float:
        """Predicted latency of ``config`` relative to the uncached run, from :meth:`calibrate`."""
        if self._step_costs is None:
            raise RuntimeError("call calibrate() before asking for the 'latency_model' objective")
        c = self._step_costs
        n = self.settings.steps
        total = 0.0
        for a in config.plan(n):
            ratio = 0.0 if a.kind == "reuse" else float(a.ratio)
            key = f"{a.kind}:{a.depth or 0}:{ratio}"
            if key not in c:
                raise KeyError(f"step action {key!r} was not calibrated; calibrated: {sorted(c)}")
            total += c[key]
        return total / (n * c["full:0:0.0"])

    # ---- scoring ------------------------------------------------------------------------------------
    def evaluate(self, config: BaseConfig) -> dict[str, float]:
        """All metrics of ``config``: ``macs``, ``latency`` (measured, relative), ``psnr``, ``ssim``,
        ``rel_l1`` and, when asked for, ``latency_model``, ``fd``, ``clip``."""
        from ..metrics import psnr, rel_l1, ssim

        base = self.baseline
        out, macs, wall = self._run(config)
        key = self.settings.fidelity_on
        a, b = out[key], base[key]
        rng = 1.0 if key == "image" else float(b.max() - b.min()) or 1.0
        m: dict[str, float] = {
            "macs": float(macs),
            "latency": wall / max(self.baseline_wall, 1e-9),
            "psnr": _finite(float(psnr(a, b, data_range=rng))),
            "rel_l1": float(rel_l1(a, b)),
        }
        try:
            m["ssim"] = float(ssim(a, b, data_range=rng))
        except ValueError:  # images smaller than 3x3
            m["ssim"] = float("nan")
        if "latency_model" in self.objectives:
            m["latency_model"] = self.modelled_latency(config)
        if "fd" in self.objectives:
            from ..metrics import classifier_features, feature_stats, frechet_distance_from_stats

            mu, sigma = feature_stats(classifier_features(out["image"]))
            m["fd"] = float(frechet_distance_from_stats(mu, sigma, *self.fd_stats))
        if "clip" in self.objectives:
            from ..metrics import clip_score

            m["clip"] = float(clip_score(out["image"], [str(p) for p in self.settings.prompts], self.clip_model))
        return m


def _finite(v: float, cap: float = 100.0) -> float:
    """PSNR of identical outputs is ``inf``; cap it so optuna and JSON stay finite."""
    return cap if math.isinf(v) or v > cap else v
