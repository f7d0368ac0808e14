"""Published denoiser shapes with random weights, and the bare denoising loop the benchmark runs them in.

Built from the models' published configs, no download: good for speed and MACs only, never for
quality (random weights make caching look free).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Published UNet / transformer configs (shapes only).
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD21_UNET = {**SD15_UNET, "cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20),
             "use_linear_projection": True, "sample_size": 96}
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=2048,
    block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20), use_linear_projection=True,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
DIT_XL2 = dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
               sample_size=32, patch_size=2, num_embeds_ada_norm=1000)
PIXART_ALPHA = dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
                    sample_size=64, patch_size=2, cross_attention_dim=1152, caption_channels=4096,
                    norm_type="ada_norm_single", num_embeds_ada_norm=1000, interpolation_scale=1)
DIT_XL2_512 = {**DIT_XL2, "sample_size": 64}
PIXART_ALPHA_1024 = {**PIXART_ALPHA, "sample_size": 128, "interpolation_scale": 2}
#: Latte-1 (PixArt-alpha-style spatial and temporal blocks, 16 frames)
LATTE = dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
             sample_size=64, patch_size=2, cross_attention_dim=1152, caption_channels=4096,
             norm_type="ada_norm_single", num_embeds_ada_norm=1000, activation_fn="gelu-approximate",
             video_length=16)
#: Stable Diffusion's VAE (also SDXL's and PixArt-alpha's architecture): 4 latent channels, 8x upsampling.
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
              block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215)

#: name -> (model family, config, default resolution, prediction type)
MODELS: dict[str, tuple[str, dict, int, str]] = {
    "sd15": ("unet", SD15_UNET, 512, "epsilon"),
    "sd21": ("unet", SD21_UNET, 768, "v_prediction"),
    "sdxl": ("unet", SDXL_UNET, 1024, "epsilon"),
    "dit-xl-2": ("dit", DIT_XL2, 256, "epsilon"),
    "dit-xl-2-512": ("dit", DIT_XL2_512, 512, "epsilon"),
    "pixart-alpha": ("pixart", PIXART_ALPHA, 512, "epsilon"),
    "pixart-alpha-1024": ("pixart", PIXART_ALPHA_1024, 1024, "epsilon"),
    "latte": ("latte", LATTE, 512, "epsilon"),
}


def build_model(name: str, dtype: torch.dtype | None = None, device: str = "cpu") -> tuple[torch.nn.Module, str]:
    """A random-weight denoiser of a published shape (float32 unless ``dtype``). Returns ``(model, family)``."""
    import torch
    from diffusers import DiTTransformer2DModel, LatteTransformer3DModel, PixArtTransformer2DModel, UNet2DConditionModel

    if name not in MODELS:
        raise ValueError(f"bench model={name!r} is unknown; allowed: {sorted(MODELS)} or a checkpoint directory")
    family, cfg, _, _ = MODELS[name]
    cls = {"unet": UNet2DConditionModel, "dit": DiTTransformer2DModel, "pixart": PixArtTransformer2DModel,
           "latte": LatteTransformer3DModel}[family]
    torch.manual_seed(0)
    return _to(cls(**cfg), device, dtype).eval(), family


def _to(model: torch.nn.Module, device: str, dtype: torch.dtype | None) -> torch.nn.Module:
    import torch

    # built in float32: only cast when asked (diffusers warns on a cast to the same dtype)
    return model.to(device) if dtype in (None, torch.float32) else model.to(device=device, dtype=dtype)


def build_vae(dtype: torch.dtype | None = None, device: str = "cpu") -> torch.nn.Module:
    """A random-weight ``AutoencoderKL`` of the SD VAE's published shape, to time decoding the latents."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return _to(AutoencoderKL(**SD_VAE), device, dtype).eval()


def model_family(model: torch.nn.Module) -> str:
    """``"dit"``, ``"pixart"``, ``"latte"`` or ``"unet"`` (anything else is driven like a UNet)."""
    from diffusers import DiTTransformer2DModel, LatteTransformer3DModel, PixArtTransformer2DModel

    if isinstance(model, DiTTransformer2DModel):
        return "dit"
    if isinstance(model, LatteTransformer3DModel):
        return "latte"
    if isinstance(model, PixArtTransformer2DModel):
        return "pixart"
    return "unet"


def make_loop(
    model: torch.nn.Module, family: str, resolution: int, batch: int, steps: int, guidance: float,
    scheduler: Any = None, seed: int = 0,
) -> Callable[[], torch.Tensor]:
    """A closure running one seeded denoising loop (of a :func:`model_family` family) returning the final latents."""
    import torch
    from diffusers import DDIMScheduler

    p = next(model.parameters())
    dev, dtype = p.device, p.dtype
    sched = scheduler or DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    cfg = guidance > 1.0
    rows = 2 * batch if cfg else batch
    cfgd = model.config
    lat = resolution // 8
    g = torch.Generator().manual_seed(seed)
    shape = (batch, cfgd.in_channels, cfgd.video_length, lat, lat) if family == "latte" else (
        batch, cfgd.in_channels, lat, lat)
    latents0 = torch.randn(shape, generator=g).to(dev, dtype)
    kwargs: dict[str, Any] = {}
    if family == "unet":
        ctx = torch.randn(rows, 77, cfgd.cross_attention_dim, generator=g).to(dev, dtype)
        kwargs["encoder_hidden_states"] = ctx
        if cfgd.addition_embed_type == "text_time":
            pooled = cfgd.projection_class_embeddings_input_dim - 6 * cfgd.addition_time_embed_dim
            kwargs["added_cond_kwargs"] = {
                "text_embeds": torch.randn(rows, pooled, generator=g).to(dev, dtype),
                "time_ids": torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]] * rows).to(
                    dev, dtype
                ),
            }
    elif family == "dit":
        labels = torch.arange(batch) % 1000
        kwargs["class_labels"] = torch.cat([torch.full_like(labels, 1000), labels]) if cfg else labels
        kwargs["class_labels"] = kwargs["class_labels"].to(dev)
    else:  # PixArt and Latte: T5-sized caption embeddings
        kwargs["encoder_hidden_states"] = torch.randn(rows, 120, cfgd.caption_channels, generator=g).to(dev, dtype)
        if family == "pixart":  # PixArt-alpha 1024 conditions on resolution and aspect ratio
            extra = model.use_additional_conditions
            size = torch.tensor([[resolution, resolution]] * rows, dtype=dtype, device=dev)
            aspect = torch.ones(rows, 1, dtype=dtype, device=dev)
            kwargs["added_cond_kwargs"] = {"resolution": size if extra else None,
                                           "aspect_ratio": aspect if extra else None}

    def loop() -> torch.Tensor:
        sched.set_timesteps(steps)
        x = latents0.clone()
        for t in sched.timesteps:
            inp = torch.cat([x, x]) if cfg else x
            tt = t.expand(inp.shape[0]).to(dev) if family != "unet" else t
            if family == "unet":
                out = model(inp, tt, **kwargs).sample
            else:
                out = model(inp, timestep=tt, **kwargs).sample
            if out.shape[1] != x.shape[1]:  # learned sigma: keep eps
                out = out[:, : x.shape[1]]
            if cfg:
                unc, con = out.chunk(2)
                out = unc + guidance * (con - unc)
            x = sched.step(out, t, x).prev_sample
        return x

    loop.scheduler = sched  # type: ignore[attr-defined]  (peers such as DeepCache read it)
    return loop
