"""Each method's presets with reuse, Taylor order 1 and FoCa, at the same full-step schedule (same MACs).

The measurement behind the presets' ``forecast`` (docs/forecasting.md, "Presets"): 30 digits (3 per class),
noise seed 11, 50 DDIM steps, CFG 3, PSNR vs uncached in digit space, on the trained reference models.

    python benchmarks/preset_forecasts.py dit pixart unet
"""

from __future__ import annotations

import sys

import torch

from tokencache import apply, remove, summary, zoo
from tokencache.harness.registry import CONFIG_CLASSES
from tokencache.metrics import psnr


def main(families: list[str]) -> None:
    torch.set_grad_enabled(False)
    digits = [d for d in range(10) for _ in range(3)]
    for fam in families:
        pipe = zoo.load(fam)
        base = zoo.sample(fam, pipe, digits, seed=11, num_inference_steps=50)
        for method in ("dato", "deepcache") if fam == "unet" else ("toca", "duca", "fora"):
            cls = CONFIG_CLASSES[method]
            for preset in ("quality", "balanced", "fast"):
                cells = []
                for forecast in ("none", "taylor", "foca"):
                    apply(pipe, cls.preset(preset, forecast=forecast))
                    try:
                        img = zoo.sample(fam, pipe, digits, seed=11, num_inference_steps=50)
                        macs = summary(pipe).macs_ratio
                    finally:
                        remove(pipe)
                    cells.append(f"{float(psnr(img, base)):.2f}")
                print(f"| {fam} | {method} `{preset}` | {macs:.3f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["dit", "pixart", "unet"])
