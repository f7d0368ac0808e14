"""Reuse vs forecasting at the same full-step schedule on the trained reference models (PSNR vs uncached).

    .venv/bin/python benchmarks/forecast_probe.py

DiT with FORA-like interval 3 and the UNet with DeepCache-like interval 3 / branch 0; 10 digits, 50 DDIM
steps, CFG 3, seed 0. The MACs are the same for every approximator (same schedule); only the cache grows.
"""

from __future__ import annotations

import torch

import tokencache as tc
from tokencache import zoo
from tokencache.metrics import psnr

FORECASTS = (
    {},
    {"forecast": "taylor", "forecast_order": 1},
    {"forecast": "taylor", "forecast_order": 2},
    {"forecast": "foca"},
    {"forecast": "hermite", "forecast_order": 1},
)


def main() -> None:
    torch.set_num_threads(1)
    families = {
        "dit": lambda **kw: tc.FORAConfig(interval=3, **kw),
        "unet": lambda **kw: tc.DeepCacheConfig(interval=3, branch=0, **kw),
    }
    digits = list(range(10))
    for fam, make in families.items():
        pipe = zoo.load(fam)
        base = zoo.sample(fam, pipe, digits, seed=0, num_inference_steps=50)
        for kw in FORECASTS:
            tc.apply(pipe, make(**kw))
            try:
                out = zoo.sample(fam, pipe, digits, seed=0, num_inference_steps=50)
                s = tc.summary(pipe)
            finally:
                tc.remove(pipe)
            name = kw.get("forecast", "none") + (f"{kw['forecast_order']}" if "forecast_order" in kw else "")
            print(f"{fam:5s} {name:9s} PSNR {float(psnr(out, base)):6.2f} dB  MACs {s.macs_ratio:.3f}  "
                  f"cache {s.cache_bytes / 2**20:.2f} MiB", flush=True)


if __name__ == "__main__":
    main()
