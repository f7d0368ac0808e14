"""Golden outputs of every preset (and the main non-default options) on the reference models and tiny pipelines.

Record them before a refactor, compare after: every output must equal its golden within ``--atol``
(``--atol 0``: bit for bit). The bare tiny transformers come first and take seconds.

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


BARE_STEPS = 12


def _bare_variants():
    """Bare tiny transformers (DiT, PixArt, FLUX, SD3) called step by step under many option variants.

    Cheaper than pipelines, so they cover what the presets leave out: every forecast (Taylor orders 1-3,
    Hermite, FoCa), every score, a spatial grid that does not divide the token grid, unshared CFG selection,
    bf16 caches, the authors' schedules and the MMDiT streams; each model is called twice per variant (the
    second call checks the reset).
    """
    from mmdit_tiny import flux_inputs, sd3_inputs, tiny_flux, tiny_sd3
    from test_dit import tiny_dit, tiny_pixart

    def dit_call(m):
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([1, 1000])
        return [m(x + 0.1 * i, timestep=torch.tensor([900 - 70 * i] * 2), class_labels=y).sample
                for i in range(BARE_STEPS)]

    def pixart_call(m):
        g = torch.Generator().manual_seed(0)
        x, c = torch.randn(1, 4, 12, 12, generator=g), torch.randn(2, 5, 24, generator=g)
        x = torch.cat([x, x])  # a CFG batch: equal latent halves
        return [m(x + 0.1 * i, encoder_hidden_states=c, timestep=torch.tensor([900 - 70 * i] * 2),
                  added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample for i in range(BARE_STEPS)]

    def mmdit_call(inputs, t0, dt):
        def call(m):
            args, kw = inputs(2, torch.Generator().manual_seed(0))
            return [m(args[0] + 0.1 * i, timestep=torch.tensor([t0 - dt * i] * 2), **kw).sample
                    for i in range(BARE_STEPS)]
        return call

    T, D, F = tc.ToCaConfig, tc.DuCaConfig, tc.FORAConfig
    yield "bare-dit", lambda: tiny_dit(3), dit_call, {
        "fora:taylor2": F(interval=3, forecast="taylor", forecast_order=2),
        "toca:reuse": T.preset("balanced", forecast="none"), "toca:grid3": T.preset("balanced", spatial_grid=3),
        "toca:attention": T.preset("fast", score="attention"), "toca:random": T.preset("fast", score="random"),
        "toca:taylor2": T.preset("fast", forecast_order=2),
        "toca:taylor3": T.preset("fast", forecast_order=3, first_full_steps=1),
        "toca:hermite2": T.preset("fast", forecast="hermite", forecast_order=2),
        "toca:foca": T.preset("fast", forecast="foca"), "toca:unshared": T.preset("fast", share_cfg_selection=False),
        "toca:bf16-cache": T.preset("fast", cache_dtype="bfloat16"), "toca:paper-dit": T.preset("paper-dit"),
        "duca:reuse": D.preset("fast", forecast="none"),
    }
    yield "bare-pixart", tiny_pixart, pixart_call, {
        "toca:entropy": T.preset("fast", score="cross_entropy"), "toca:paper-pixart": T.preset("paper-pixart"),
        "toca:entropy-reuse": T.preset("fast", score="cross_entropy", forecast="none"),
        "toca:attn1": T.preset("fast", partial_modules=["attn1", "attn2", "ff"]), "duca:fast": D.preset("fast"),
    }
    yield "bare-flux", lambda: tiny_flux(2, 2), mmdit_call(flux_inputs, 0.9, 0.07), {
        "toca:fast": T.preset("fast"), "duca:balanced": D.preset("balanced"), "fora:fast": F.preset("fast"),
        "toca:reuse": T.preset("fast", forecast="none"),
    }
    yield "bare-sd3", lambda: tiny_sd3(3), mmdit_call(sd3_inputs, 900, 70), {
        "toca:fast": T.preset("fast"), "duca:fast": D.preset("fast"),
    }


def collect() -> dict[str, dict]:
    out: dict[str, dict] = {}
    torch.manual_seed(0)
    for mname, make, call, variants in _bare_variants():
        model = make()
        for vname, cfg in variants.items():
            tc.apply(model, cfg, num_inference_steps=BARE_STEPS, cfg=True)
            try:
                with torch.no_grad():
                    for n in (1, 2):
                        out[f"{mname}/{vname}/call{n}"] = {"out": torch.stack(call(model))}
            finally:
                tc.remove(model)
        print(mname, "done", flush=True)
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
