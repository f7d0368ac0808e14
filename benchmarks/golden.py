"""Golden outputs of every preset (and the main non-default options) on the reference models and tiny pipelines.

Record them before a refactor, compare after: every output must equal its golden within ``--atol``.

    .venv/bin/python benchmarks/golden.py record --out /tmp/golden.pt
    .venv/bin/python benchmarks/golden.py compare --out /tmp/golden.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tokencache as tc  # noqa: E402
from tokencache import zoo  # noqa: E402

STEPS = 20


def _configs(kind: str) -> list[tuple[str, tc.config.BaseConfig]]:
    unet = [tc.DaToConfig, tc.DeepCacheConfig, tc.ToMeConfig]
    dit = [tc.ToCaConfig, tc.DuCaConfig, tc.FORAConfig]
    out = []
    for cls in unet if kind == "unet" else dit:
        for p in cls.PRESETS:
            out.append((f"{cls.method}:{p}", cls.preset(p)))
    if kind == "unet":
        out += [
            ("dato:kept-random-sign", tc.DaToConfig.preset("balanced", recovery="kept", random_sign=True)),
            ("dato:random-base", tc.DaToConfig.preset("fast", base_selection="random", align_cfg=False)),
        ]
    else:
        out += [
            ("toca:attention", tc.ToCaConfig.preset("balanced", score="attention", partial_modules=["attn1", "ff"])),
            ("toca:random-weights", tc.ToCaConfig.preset("fast", score="random", step_weight=0.3, layer_weight=0.2)),
            ("duca:stale", tc.DuCaConfig.preset("quality", staleness_weight=1.0, spatial_bonus=0.0)),
        ]
    return out


def _pipelines():
    from diffusers import (
        DDIMScheduler,
        DiTPipeline,
        DPMSolverMultistepScheduler,
        PixArtAlphaPipeline,
        StableDiffusionPipeline,
    )
    from transformers import CLIPTokenizer

    from conftest import tiny_text_encoder, tiny_unet, tiny_vae, write_clip_tokenizer
    from test_dit import NEGATIVE, PROMPT, tiny_dit, tiny_pixart

    for fam in ("unet", "dit", "pixart"):
        pipe = zoo.load(fam)

        def run(pipe=pipe, fam=fam):
            return zoo.sample(fam, pipe, [3, 8], seed=0, num_inference_steps=STEPS, output="images")

        yield f"reference-{fam}", "unet" if fam == "unet" else "dit", pipe, run

    tok_dir = Path("/tmp/golden-tok")
    write_clip_tokenizer(tok_dir)
    sd = StableDiffusionPipeline(
        unet=tiny_unet(), vae=tiny_vae(), text_encoder=tiny_text_encoder(),
        tokenizer=CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    sd.set_progress_bar_config(disable=True)

    def run_sd():
        return sd(["a cat", "a dog"], num_inference_steps=12, guidance_scale=7.5, height=32, width=32,
                  generator=torch.Generator().manual_seed(0), output_type="latent").images

    yield "tiny-sd", "unet", sd, run_sd

    dit = DiTPipeline(transformer=tiny_dit(), vae=tiny_vae(), scheduler=DDIMScheduler())
    dit.set_progress_bar_config(disable=True)

    def run_dit():
        return dit(class_labels=[1, 2, 3], num_inference_steps=12, guidance_scale=1.5,
                   generator=torch.Generator().manual_seed(0), output_type="latent").images

    yield "tiny-dit", "dit", dit, run_dit

    pix = PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=tiny_vae(), transformer=tiny_pixart(),
                              scheduler=DPMSolverMultistepScheduler())
    pix.set_progress_bar_config(disable=True)

    def run_pix():
        mask = torch.ones(1, 7)
        return pix(negative_prompt=None, prompt_embeds=PROMPT, prompt_attention_mask=mask,
                   negative_prompt_embeds=NEGATIVE, negative_prompt_attention_mask=mask, num_inference_steps=12,
                   guidance_scale=4.5, height=16, width=24, use_resolution_binning=False,
                   generator=torch.Generator().manual_seed(0), output_type="latent").images

    yield "tiny-pixart", "dit", pix, run_pix


def collect() -> dict[str, dict]:
    out: dict[str, dict] = {}
    torch.manual_seed(0)
    for pname, kind, pipe, run in _pipelines():
        with torch.no_grad():
            out[f"{pname}/baseline"] = {"out": run()}
            for cname, cfg in _configs(kind):
                tc.apply(pipe, cfg)
                try:
                    y = run()
                    s = tc.summary(pipe)
                finally:
                    tc.remove(pipe)
                out[f"{pname}/{cname}"] = {
                    "out": y,
                    "summary": {k: s.as_dict()[k] for k in ("steps_total", "steps_full", "steps_partial",
                                                            "steps_reused", "steps_aggressive",
                                                            "tokens_computed_fraction", "macs_ratio")},
                }
            print(pname, "done", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["record", "compare"])
    ap.add_argument("--out", default="/tmp/golden.pt")
    ap.add_argument("--atol", type=float, default=1e-6)
    a = ap.parse_args()
    torch.set_num_threads(1)
    now = collect()
    if a.mode == "record":
        torch.save(now, a.out)
        print(f"recorded {len(now)} outputs to {a.out}")
        return 0
    gold = torch.load(a.out, weights_only=False)  # our own file
    bad = 0
    for key, g in gold.items():
        n = now.get(key)
        if n is None:
            print(f"MISSING {key}")
            bad += 1
            continue
        diff = (torch.as_tensor(n["out"]).float() - torch.as_tensor(g["out"]).float()).abs().max().item()
        sdiff = {k: (n["summary"][k], v) for k, v in g.get("summary", {}).items()
                 if abs(float(n["summary"][k]) - float(v)) > 1e-9}
        if diff > a.atol or sdiff:
            bad += 1
            print(f"DIFF {key}: max|out| {diff:.3g} summary {sdiff}")
    print(f"{len(gold) - bad}/{len(gold)} outputs match within {a.atol}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
