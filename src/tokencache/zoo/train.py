"""Trains the zoo models (digits for tier 1, rendered glyphs for tier 2) on the CPU, reproducibly from a seed.

Usage:
    python -m tokencache.zoo.train FAMILY [--tier T] [--minutes M] [--seed S] [--out DIR] [--steps N]
                                          [--batch-size B] [--lr LR] [--threads T] [--init FILE]
                                          [--text-pretrain-steps K]

FAMILY is one of `classifier`, `vae`, `unet`, `dit`, `pixart`, `flux`, `wan` (tier 1, digits; `wan`: 5-frame
clips of a moving digit, see `wan.py`), or with `--tier 2` (glyphs, see `glyphs.py`) `classifier`, `dit`,
`unet`, `pixart` or `flux`, written as `classifier2.*` / `dit2.*` / `unet2.*` / `pixart2.*` / `flux2.*`. The diffusion
families decode
through the shared near-identity VAE (`vae`), which is trained once. Training runs for a fixed number of steps
(the family's default or `--steps`), so a run is reproducible bit for bit on the same torch build and thread count
(one thread, except the tier-2 `unet`, `pixart` and `flux`, whose default is two, to fit the 45-minute budget at
1024 and 256 tokens); `--minutes` is a wall-clock cap that stops early (recorded as `"stopped_early": true` in
`{family}.json`) if the machine is slower. To train longer, raise both `--steps` and `--minutes`. Weights are
written to `--out` (defaults to the shipped weights directory) and `checksums.json` there is rewritten.
The tier-2 `unet` and `pixart` first pre-train their text encoder to tell the letter prompts apart
(`--text-pretrain-steps`, default 300; `pretrain_text_encoder`). The tier-2 `pixart` also fits its cosine
learning-rate schedule to the steps this machine finishes within `--minutes` (`TrainConfig.clock_schedule`: timed
on the first 50 steps, recorded as `steps_planned`), so a run on a slower machine still anneals instead of being
cut at a high learning rate; `--steps` with the recorded `steps_planned` reproduces it on a fast enough machine.
"""

import argparse
import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from safetensors.torch import load_file
from torch import nn

from . import models
from .data import load_digits_split, to_model_space
from .files import TOKENIZER_FILES, WEIGHTS_DIR, save_weights, sha256_of, split_state, write_checksums
from .glyphs import NUM_CLASSES, TRAIN_FONTS, augment_glyphs, base_renders, glyph_split
from .tokenizer import MAX_LENGTH, digit_prompt, letter_prompt, load_tokenizer, write_tokenizer_files

TRAIN_FAMILIES = ("classifier", "vae", "unet", "dit", "pixart", "flux", "wan")
TIER2_TRAIN_FAMILIES = ("classifier", "dit", "unet", "pixart", "flux")
"""Families `--tier 2` trains; their files are named with a `2` suffix (`dit2.safetensors`)."""
GLYPH_TRAIN_COPIES = 24
"""Augmented copies per (train font, letter) in the tier-2 diffusion training set (9984 images)."""


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (the defaults per family are in `DEFAULTS`)."""

    steps: int
    batch_size: int
    lr: float
    warmup: int = 100
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    cond_drop: float = 0.1
    min_snr_gamma: float = 5.0
    minutes: float = 30.0
    seed: int = 0
    threads: int = 1
    text_pretrain_steps: int = 0
    clock_schedule: bool = False  # fit the cosine to the steps that fit in `minutes` (see `_Loop._plan`)
    freeze_text_encoder: bool = False  # after `pretrain_text_encoder`, keep it fixed (as SD/PixArt keep CLIP/T5)


DEFAULTS: dict[str, dict[str, Any]] = {
    "classifier": {"steps": 3000, "batch_size": 64, "lr": 1e-3, "warmup": 100, "weight_decay": 1e-4},
    "vae": {"steps": 1200, "batch_size": 32, "lr": 1e-3, "warmup": 50},
    "unet": {"steps": 2600, "batch_size": 32, "lr": 1e-3},
    "dit": {"steps": 2000, "batch_size": 64, "lr": 3e-4},
    "pixart": {"steps": 6500, "batch_size": 64, "lr": 1e-3},
    "classifier2": {"steps": 3000, "batch_size": 64, "lr": 2e-3, "warmup": 100, "weight_decay": 1e-4},
    "dit2": {"steps": 5400, "batch_size": 32, "lr": 1e-3, "minutes": 45.0, "threads": 2},
    "unet2": {"steps": 3000, "batch_size": 32, "lr": 1e-3, "minutes": 45.0, "threads": 2, "text_pretrain_steps": 300},
    "pixart2": {
        "steps": 5600, "batch_size": 32, "lr": 2e-3, "minutes": 45.0, "threads": 2, "text_pretrain_steps": 300,
        "clock_schedule": True, "freeze_text_encoder": True,
    },
    "flux": {"steps": 3000, "batch_size": 64, "lr": 5e-4, "minutes": 60.0},
    "flux2": {"steps": 5400, "batch_size": 32, "lr": 1e-3, "minutes": 45.0, "threads": 2},
    "wan": {"steps": 6400, "batch_size": 32, "lr": 1e-3, "minutes": 45.0},
}


class EMA:
    """Exponential moving average of a module's parameters and buffers, with a warm-up of the decay."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for ema_p, p in zip(self.shadow.parameters(), module.parameters()):
            if p.requires_grad:  # a frozen part (the pre-trained text encoder) stays equal to its copy
                ema_p.lerp_(p, 1.0 - decay)
        for ema_b, b in zip(self.shadow.buffers(), module.buffers()):
            ema_b.copy_(b)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


PLAN_AFTER = 50  # `clock_schedule`: steps timed before the cosine is fitted to the cap


class _Loop:
    """Shared step/clock/optimizer bookkeeping for all families."""

    def __init__(self, params: list[nn.Parameter], cfg: TrainConfig, name: str):
        self.cfg = cfg
        self.name = name
        self.start = time.perf_counter()
        self.total = cfg.steps  # `_plan` may lower it (`clock_schedule`)
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: _lr_factor(s, cfg.warmup, self.total)
        )
        self.params = params
        self.step = 0
        self.stopped_early = False
        self.running = 0.0

    def _plan(self) -> None:
        # Fit the cosine to the steps this machine finishes within the cap (at the pace of the first
        # PLAN_AFTER steps, 3% spare), so a capped run still anneals. The plan is recorded as
        # `steps_planned`; `--steps` with that number reproduces the run on a machine that is fast enough.
        elapsed = time.perf_counter() - self.start
        left = self.cfg.minutes * 60 - elapsed
        fits = PLAN_AFTER + int(0.97 * left * PLAN_AFTER / elapsed)
        self.total = max(PLAN_AFTER + 1, min(self.cfg.steps, fits))
        print(f"[{self.name}] planned {self.total} steps within the {self.cfg.minutes} min cap", flush=True)

    def __iter__(self):
        step = 0
        while step < self.total:
            if step == PLAN_AFTER and self.cfg.clock_schedule:
                self._plan()
            if time.perf_counter() - self.start > self.cfg.minutes * 60:
                self.stopped_early = True
                print(f"[{self.name}] time cap of {self.cfg.minutes} min reached at step {step}", flush=True)
                return
            self.step = step
            yield step
            step += 1

    def backward(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.sched.step()
        self.running = 0.98 * self.running + 0.02 * loss.item() if self.step else loss.item()
        if self.step % 100 == 0 or self.step == self.total - 1:
            elapsed = time.perf_counter() - self.start
            print(f"[{self.name}] step {self.step:5d} loss {self.running:.4f} {elapsed:6.1f}s", flush=True)

    def info(self) -> dict[str, Any]:
        return {
            **asdict(self.cfg),
            "steps_done": self.step + 1,
            "steps_planned": self.total,
            "stopped_early": self.stopped_early,
            "seconds": round(time.perf_counter() - self.start, 1),
            "torch_version": torch.__version__,
        }


def train_classifier(cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Trains `DigitClassifier` on the train split (shift/noise/blur augmentation, cross-entropy)."""
    x_train, y_train, x_test, y_test = load_digits_split()
    model = models.DigitClassifier()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    loop = _Loop(list(model.parameters()), cfg, "classifier")
    model.train()
    for _ in loop:
        idx = torch.randint(0, len(x_train), (cfg.batch_size,), generator=gen)
        x, y = _augment_digits(x_train[idx], gen), y_train[idx]
        loop.backward(F.cross_entropy(model(x), y, label_smoothing=0.05))
    model.eval()
    with torch.no_grad():
        acc = (model(x_test).argmax(-1) == y_test).float().mean().item()
    print(f"[classifier] test accuracy {acc:.4f}", flush=True)
    meta = {"config": {"width": 32, "num_features": model.num_features}, "training": loop.info()}
    meta["test_accuracy"] = round(acc, 4)
    return model.state_dict(), meta


def train_glyph_classifier(cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Trains `GlyphClassifier` on fresh augmentations of the train fonts; scores it on the test fonts."""
    base, labels, _ = base_renders(TRAIN_FONTS)
    split = glyph_split(seed=0, per_font=1, test_per_font=8)
    model = models.GlyphClassifier()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    loop = _Loop(list(model.parameters()), cfg, "classifier2")
    model.train()
    for _ in loop:
        idx = torch.randint(0, len(base), (cfg.batch_size,), generator=gen)
        x = augment_glyphs(base[idx], gen)
        # blur and noise like imperfect generated samples, so they are read by shape
        blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        x = torch.where(torch.rand(len(x), 1, 1, 1, generator=gen) < 0.3, blur, x)
        noise = torch.randn(x.shape, generator=gen) * 0.1 * torch.rand(len(x), 1, 1, 1, generator=gen)
        loop.backward(F.cross_entropy(model((x + noise).clamp(0, 1)), labels[idx], label_smoothing=0.05))
    model.eval()
    with torch.no_grad():
        acc = (model(split.x_test).argmax(-1) == split.y_test).float().mean().item()
    print(f"[classifier2] test-font accuracy {acc:.4f} ({len(split.y_test)} glyphs)", flush=True)
    meta = {"config": {"width": 32, "num_features": model.num_features}, "training": loop.info()}
    meta["test_accuracy"] = round(acc, 4)
    meta["test_fonts"] = list(split.test_fonts)
    return model.state_dict(), meta


def _augment_digits(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    padded = F.pad(x, (1, 1, 1, 1))
    dx = torch.randint(0, 3, (n,), generator=gen)
    dy = torch.randint(0, 3, (n,), generator=gen)
    rows = torch.arange(8)
    shifted = torch.stack([padded[i, :, dy[i] + rows][:, :, dx[i] + rows] for i in range(n)])
    keep = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
    x = torch.where(keep, x, shifted)
    # round trip through model space, as generated samples do
    blur = F.avg_pool2d(F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False), 2)
    x = torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.5, blur, x)
    noise = torch.randn(x.shape, generator=gen) * 0.05 * torch.rand(n, 1, 1, 1, generator=gen)
    return (x + noise).clamp(0, 1)


def train_vae(cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Trains the `AutoencoderKL` to be a near-identity map: latent = grey image, decode(latent) = image.

    The encoder mean is regressed onto the grey image (log-variance onto -10, i.e. std 0.007); the decoder
    maps a (possibly noisy) grey latent to the same grey image in all three channels.
    """
    x_train = to_model_space(load_digits_split()[0])
    vae = models.build_vae()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    loop = _Loop(list(vae.parameters()), cfg, "vae")
    vae.train()
    for _ in loop:
        idx = torch.randint(0, len(x_train), (cfg.batch_size,), generator=gen)
        x = x_train[idx]
        sigma = 0.15 * torch.rand(x.shape[0], 1, 1, 1, generator=gen)
        z = (x + sigma * torch.randn(x.shape, generator=gen)).clamp(-1.2, 1.2)
        moments = vae.quant_conv(vae.encoder(x.expand(-1, 3, -1, -1)))
        mean, logvar = moments.chunk(2, dim=1)
        decoded = vae.decode(z).sample
        loss = F.mse_loss(decoded, z.clamp(-1, 1).expand(-1, 3, -1, -1)) + F.mse_loss(mean, x)
        loss = loss + 0.01 * F.mse_loss(logvar, torch.full_like(logvar, -10.0))
        loop.backward(loss)
    vae.eval()
    x_test = to_model_space(load_digits_split()[2])
    with torch.no_grad():
        latents = vae.encode(x_test.expand(-1, 3, -1, -1)).latent_dist.mean
        recon = vae.decode(x_test).sample
    enc_err = (latents - x_test).abs().mean().item()
    mse = F.mse_loss(recon, x_test.expand(-1, 3, -1, -1)).item()
    psnr = 10 * math.log10(4.0 / mse)
    print(f"[vae] test encoder |mean - x| {enc_err:.4f}, decoder PSNR {psnr:.2f} dB (range 2)", flush=True)
    meta = {
        "config": dict(vae.config),
        "training": loop.info(),
        "test_encoder_l1": round(enc_err, 5),
        "test_decoder_psnr_db": round(psnr, 2),
    }
    return vae.state_dict(), meta


class _Diffusion:
    """Noising and the min-SNR-weighted epsilon loss for the shared DDPM schedule."""

    def __init__(self, gamma: float):
        sched = DDPMScheduler.from_config(models.SCHEDULER_CONFIG)
        self.alphas_cumprod = sched.alphas_cumprod.float()
        self.num_steps = len(self.alphas_cumprod)
        self.gamma = gamma

    def loss(
        self,
        model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x0: torch.Tensor,
        gen: torch.Generator,
    ) -> torch.Tensor:
        n = x0.shape[0]
        t = torch.randint(0, self.num_steps, (n,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        ab = self.alphas_cumprod[t].view(n, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        pred = model_fn(xt, t)
        snr = ab / (1 - ab)
        weight = snr.clamp(max=self.gamma) / snr if self.gamma > 0 else torch.ones_like(snr)
        return (weight * (pred - noise) ** 2).mean()


def _drop(labels: torch.Tensor, null: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(labels.shape, generator=gen) < p, torch.full_like(labels, null), labels)


def _prompt_batch(weights_dir: Path, tier: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and masks of the training prompts: digits 0-9 (tier 1) or letters A-Z (tier 2), then the
    empty prompt (index 10 or 26)."""
    tok = load_tokenizer(*(weights_dir / name for name in TOKENIZER_FILES))
    prompts = [digit_prompt(d) for d in range(10)] if tier == 1 else [letter_prompt(i) for i in range(NUM_CLASSES)]
    enc = tok(
        prompts + [""],
        padding="max_length",
        max_length=MAX_LENGTH,
        truncation=True,
        return_tensors="pt",
    )
    return enc.input_ids, enc.attention_mask


def pretrain_text_encoder(
    text_encoder: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None, steps: int, seed: int
) -> float:
    """Teaches a fresh text encoder to tell the class prompts apart before the denoiser sees it.

    The stand-in for a pretrained CLIP / T5: with a random encoder trained jointly, a denoiser that reads the
    prompt only through cross-attention first learns to draw glyphs unconditionally and starts reading the
    prompt thousands of steps later (tier 2: beyond the 45-minute budget). Here every output position from the
    first one that differs between the class prompts (``mask``: only unmasked ones) is pulled towards a
    fixed random unit vector of its class (cosine logits at scale 10, cross-entropy, Adam 3e-3), so the
    cross-attention values carry the class from the first denoiser step. ``ids`` holds the class prompts
    then the empty prompt (left alone). Returns the last loss.
    """
    n = len(ids) - 1
    first = int((ids[:n] != ids[0]).any(0).nonzero()[0])
    keep = torch.ones(ids.shape[1], dtype=torch.bool) if mask is None else mask[:n].bool().all(0)
    keep[:first] = False
    gen = torch.Generator().manual_seed(seed + 2)
    width = text_encoder.config.hidden_size
    protos = F.normalize(torch.randn(n, width, generator=gen), dim=-1)
    target = torch.arange(n).repeat_interleave(int(keep.sum()))
    opt = torch.optim.Adam(text_encoder.parameters(), lr=3e-3)
    loss = torch.zeros(())
    for _ in range(steps):
        out = text_encoder(ids[:n], attention_mask=None if mask is None else mask[:n])[0][:, keep]
        loss = F.cross_entropy((10.0 * F.normalize(out, dim=-1) @ protos.T).reshape(-1, n), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def train_diffusion(
    family: str, cfg: TrainConfig, weights_dir: Path, tier: int = 1, init: Path | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Trains the `unet`, `dit` or `pixart` denoiser (epsilon loss, min-SNR weights, CFG dropout, EMA).

    Tier 2 (`dit`, `unet` or `pixart`) trains `build_dit2` / `build_unet2` / `build_pixart2` on the glyph train
    fonts in model space (`x * 2 - 1`, 32x32); the text-conditioned ones' prompts are `"the letter K"`
    (`tokenizer.letter_prompt`).
    `init` (a `{name}.safetensors` written by this script) warm-starts the denoiser and text encoder from it.
    """
    if tier == 2:
        if family not in ("dit", "unet", "pixart"):
            raise ValueError(f"tier-2 diffusion family must be 'dit', 'unet' or 'pixart', got {family!r}")
        split = glyph_split(seed=0, per_font=GLYPH_TRAIN_COPIES)
        x_train, y_train = split.x_train * 2.0 - 1.0, split.y_train
    else:
        x_train, y_train = load_digits_split()[:2]
        x_train = to_model_space(x_train)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    diffusion = _Diffusion(cfg.min_snr_gamma)
    text_encoder = None
    if family == "unet":
        model = models.build_unet2() if tier == 2 else models.build_unet()
        text_encoder = models.build_text_encoder()
    elif family == "dit":
        model = models.build_dit2() if tier == 2 else models.build_dit()
        for module in model.modules():  # we drop labels ourselves, consistently across blocks
            if hasattr(module, "dropout_prob"):
                module.dropout_prob = 0.0
    elif family == "pixart":
        model = models.build_pixart2() if tier == 2 else models.build_pixart()
        text_encoder = models.build_text_encoder()
    else:
        raise ValueError(f"not a diffusion family: {family!r}")
    if init is not None:
        state = load_file(str(init))
        model.load_state_dict(split_state(state, family))
        if text_encoder is not None:
            text_encoder.load_state_dict(split_state(state, "text_encoder"))
    trainable = nn.ModuleDict(
        {"model": model} if text_encoder is None else {"model": model, "te": text_encoder}
    )
    ids, mask = _prompt_batch(weights_dir, tier)
    null_prompt = len(ids) - 1
    te_mask = mask if family == "pixart" else None  # the SD-style UNet reads the padded prompt, PixArt masks it
    text_loss = None
    if text_encoder is not None and cfg.text_pretrain_steps and init is None:
        start = time.perf_counter()
        text_loss = pretrain_text_encoder(text_encoder, ids, te_mask, cfg.text_pretrain_steps, cfg.seed)
        text_seconds = time.perf_counter() - start
    frozen_emb = None
    if text_loss is not None and cfg.freeze_text_encoder:
        # a pre-trained encoder already tells the letters apart: train the denoiser against it, like SD / PixArt
        # against their frozen CLIP / T5 (without pre-training, or warm-started, it trains jointly as before)
        text_encoder.requires_grad_(False).eval()
        with torch.no_grad():
            frozen_emb = text_encoder(ids, attention_mask=te_mask)[0]
    loop = _Loop([p for p in trainable.parameters() if p.requires_grad], cfg, family)
    ema = EMA(trainable, cfg.ema_decay)
    trainable.train()
    if frozen_emb is not None:
        text_encoder.eval()  # frozen: its embeddings were computed once above
    for _ in loop:
        idx = torch.randint(0, len(x_train), (cfg.batch_size,), generator=gen)
        x0, labels = x_train[idx], y_train[idx]
        if family == "dit":
            labels = _drop(labels, models.NULL_CLASS, cfg.cond_drop, gen)

            def fn(xt, t, labels=labels):
                return model(xt, timestep=t, class_labels=labels).sample

        else:
            labels = _drop(labels, null_prompt, cfg.cond_drop, gen)
            emb = (text_encoder(ids, attention_mask=te_mask)[0] if frozen_emb is None else frozen_emb)[labels]
            if family == "unet":

                def fn(xt, t, emb=emb):
                    return model(xt, t, encoder_hidden_states=emb).sample

            else:

                def fn(xt, t, emb=emb, m=mask[labels]):
                    return model(
                        xt,
                        encoder_hidden_states=emb,
                        encoder_attention_mask=m,
                        timestep=t,
                        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                    ).sample

        loop.backward(diffusion.loss(fn, x0, gen))
        ema.update(trainable)
    configs = {"scheduler": models.SCHEDULER_CONFIG}
    configs[family] = dict(model.config)
    tensors = {f"{family}.{k}": v for k, v in ema.shadow["model"].state_dict().items()}
    if text_encoder is not None:
        configs["text_encoder"] = models.text_encoder_config()
        tensors.update({f"text_encoder.{k}": v for k, v in ema.shadow["te"].state_dict().items()})
    info = loop.info()
    if text_loss is not None:
        info["text_pretrain_loss"] = round(text_loss, 6)
        info["text_pretrain_seconds"] = round(text_seconds, 1)
    return tensors, {"configs": configs, "training": info}


def _train_family(
    family: str, name: str, cfg: TrainConfig, out: Path, tier: int, init: Path | None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if name == "classifier":
        tensors, meta = train_classifier(cfg)
    elif name == "classifier2":
        tensors, meta = train_glyph_classifier(cfg)
    elif family == "vae":
        tensors, meta = train_vae(cfg)
    elif family == "flux":  # flow matching through FluxPipeline: its own module
        from .flux import train_flux

        tensors, meta = train_flux(cfg, tier)
    elif family == "wan":  # flow matching on 5-frame clips through WanPipeline: its own module
        from .wan import train_wan

        tensors, meta = train_wan(cfg)
    else:
        tensors, meta = train_diffusion(family, cfg, out, tier, init)
    return tensors, meta


def train(
    family: str,
    minutes: float | None = None,
    seed: int = 0,
    out: Path | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    tier: int = 1,
    init: Path | None = None,
    threads: int | None = None,
    text_pretrain_steps: int | None = None,
) -> Path:
    """Trains one family and writes its files and the updated `checksums.json` to `out`.

    Args:
        family (`str`): one of `TRAIN_FAMILIES` (tier 1) or `TIER2_TRAIN_FAMILIES` (tier 2).
        minutes (`float`, *optional*): wall-clock cap; defaults to the family's (45 for tier 2).
        seed (`int`, defaults to 0): seeds initialisation, batches, noise and label dropout.
        out (`Path`, *optional*): output directory; defaults to the shipped weights directory.
        steps, batch_size, lr: override the family's defaults in `DEFAULTS`.
        tier (`int`, defaults to 1): 1 (digits) or 2 (glyphs; files `{family}2.*`).
        init (`Path`, *optional*): diffusion families only: warm-start from this `{name}.safetensors` (its
            sha256 is recorded as `training.init_sha256`).
        threads (`int`, *optional*): torch threads during training; defaults to the family's (`DEFAULTS`).
            A run is reproducible bit for bit only at the same thread count.
        text_pretrain_steps (`int`, *optional*): `unet` and `pixart`: steps of `pretrain_text_encoder` before
            the denoiser trains (defaults to the family's: 300 at tier 2, 0 at tier 1; 0 disables it; skipped
            when warm-starting from `init`).

    Returns:
        `Path`: the written `{family}.safetensors` (`{family}2.safetensors` for tier 2).
    """
    if tier not in (1, 2):
        raise ValueError(f"tier must be 1 or 2, got {tier!r}")
    allowed = TRAIN_FAMILIES if tier == 1 else TIER2_TRAIN_FAMILIES
    if family not in allowed:
        raise ValueError(f"unknown family {family!r} for tier {tier}; expected one of {', '.join(allowed)}")
    name = family if tier == 1 else f"{family}2"
    if init is not None and family in ("classifier", "vae"):
        raise ValueError(f"init is for the diffusion families, not {family!r}")
    torch.manual_seed(seed)
    out = Path(out) if out is not None else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer_files(out / TOKENIZER_FILES[0], out / TOKENIZER_FILES[1])
    overrides = {
        k: v
        for k, v in {
            "steps": steps, "batch_size": batch_size, "lr": lr, "threads": threads,
            "text_pretrain_steps": text_pretrain_steps,
        }.items()
        if v is not None
    }
    if minutes is not None:
        overrides["minutes"] = minutes
    cfg = TrainConfig(**{**DEFAULTS[name], **overrides, "seed": seed})
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        tensors, meta = _train_family(family, name, cfg, out, tier, init)
    finally:
        torch.set_num_threads(threads)  # the caller's setting, e.g. a test process's
    if init is not None:
        meta["training"]["init_sha256"] = sha256_of(Path(init))
    meta["family"] = name
    meta["tier"] = tier
    save_weights(out, name, tensors, meta)
    write_checksums(out)
    print(f"[{name}] wrote {out / (name + '.safetensors')} in {meta['training']['seconds']} s", flush=True)
    return out / f"{name}.safetensors"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tokencache.zoo.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("family", choices=TRAIN_FAMILIES)
    parser.add_argument("--tier", type=int, choices=(1, 2), default=1, help="1: digits, 2: glyphs")
    parser.add_argument(
        "--minutes", type=float, default=None, help="wall-clock cap (default 30; 45 for --tier 2)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: shipped weights)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: per family)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--init", type=Path, default=None, help="warm-start from this .safetensors (diffusion)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: per family, 1 or 2)")
    parser.add_argument(
        "--text-pretrain-steps", type=int, default=None,
        help="unet/pixart: text-encoder pre-training steps (default: 300 at tier 2, 0 at tier 1; 0 disables)",
    )
    args = parser.parse_args(argv)
    if args.tier == 2 and args.family not in TIER2_TRAIN_FAMILIES:
        parser.error(f"--tier 2 trains {' or '.join(TIER2_TRAIN_FAMILIES)}, not {args.family!r}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.text_pretrain_steps is not None and args.text_pretrain_steps < 0:
        parser.error(f"--text-pretrain-steps must be >= 0, got {args.text_pretrain_steps}")
    train(args.family, args.minutes, args.seed, args.out, args.steps, args.batch_size, args.lr, args.tier, args.init,
          args.threads, args.text_pretrain_steps)


if __name__ == "__main__":
    main()
