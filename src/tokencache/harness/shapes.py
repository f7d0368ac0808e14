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
#: FLUX.1-dev (schnell: ``guidance_embeds=False``); 11.9B parameters, 44 GiB in float32.
FLUX1_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                 num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                 axes_dims_rope=(16, 56, 56))
#: FLUX.1-dev at full width with 1 double-stream and 2 single-stream blocks (0.69B): fits a small machine.
FLUX1_DEV_SHALLOW = {**FLUX1_DEV, "num_layers": 1, "num_single_layers": 2}
#: SD3.5-medium (dual attention in blocks 0-12, RMS q/k norm); 2.24B parameters.
SD35_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
                   attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                   pooled_projection_dim=2048, pos_embed_max_size=384, dual_attention_layers=tuple(range(13)),
                   qk_norm="rms_norm")
SD35_MEDIUM_SHALLOW = {**SD35_MEDIUM, "num_layers": 3, "dual_attention_layers": (0,)}
#: SD3.5-large; 8.06B parameters.
SD35_LARGE = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=38,
                  attention_head_dim=64, num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
                  pooled_projection_dim=2048, pos_embed_max_size=192, qk_norm="rms_norm")
#: Wan 2.1 T2V 1.3B; 1.42B parameters.
WAN21_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                  out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                  qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
WAN21_1_3B_SHALLOW = {**WAN21_1_3B, "num_layers": 4}
#: Wan 2.1 T2V 14B (each expert of Wan 2.2 A14B); 14.3B parameters.
WAN21_14B = {**WAN21_1_3B, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}
#: Qwen-Image; 20.4B parameters.
QWEN_IMAGE = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
                  num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False, axes_dims_rope=(16, 56, 56))
QWEN_IMAGE_SHALLOW = {**QWEN_IMAGE, "num_layers": 3}
#: Stable Diffusion's VAE (also SDXL's and PixArt-alpha's architecture): 4 latent channels, 8x upsampling.
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
              block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215)

#: FLUX.1's VAE (16 latent channels, no quant convs, latents shifted then scaled); the transformer sees them
#: packed 2x2 into 64 channels.
FLUX_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, norm_num_groups=32,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024, scaling_factor=0.3611,
                shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)

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
    "flux-dev": ("flux", FLUX1_DEV, 1024, "flow"),
    "flux-dev-shallow": ("flux", FLUX1_DEV_SHALLOW, 512, "flow"),
    "sd35-medium": ("sd3", SD35_MEDIUM, 1024, "flow"),
    "sd35-medium-512": ("sd3", SD35_MEDIUM, 512, "flow"),
    "sd35-medium-shallow": ("sd3", SD35_MEDIUM_SHALLOW, 512, "flow"),
    "sd35-large": ("sd3", SD35_LARGE, 1024, "flow"),
    "wan21-1.3b": ("wan", WAN21_1_3B, 480, "flow"),
    "wan21-1.3b-shallow": ("wan", WAN21_1_3B_SHALLOW, 480, "flow"),
    "wan21-14b": ("wan", WAN21_14B, 480, "flow"),
    "qwen-image": ("qwen", QWEN_IMAGE, 1024, "flow"),
    "qwen-image-shallow": ("qwen", QWEN_IMAGE_SHALLOW, 512, "flow"),
}
#: the published text lengths each MMDiT family's loop feeds (FLUX-dev T5 512, SD3 CLIP 77 + T5 256, Wan
#: UMT5 512, Qwen-Image a typical 64-token prompt), and Wan's frames (5 frames: 2 latent frames) and aspect.
TEXT_TOKENS = {"flux": 512, "sd3": 333, "wan": 512, "qwen": 64}
WAN_FRAMES = 5
WAN_ASPECT = 832 / 480
#: denoiser class -> family of the MMDiT / video shapes
_MMDIT_CLASSES = {"FluxTransformer2DModel": "flux", "SD3Transformer2DModel": "sd3", "WanTransformer3DModel": "wan",
                  "QwenImageTransformer2DModel": "qwen"}


def wan_width(resolution: int) -> int:
    """The frame width the Wan loop uses at frame height ``resolution`` (Wan's 832 / 480 aspect, a multiple of 16)."""
    return int(round(resolution * WAN_ASPECT / 16)) * 16


def size_label(family: str, resolution: int) -> str:
    """What a bench header calls the generated size: ``"512x512"``, or for Wan ``"480x832, 5 frames"``."""
    if family == "wan":
        return f"{resolution}x{wan_width(resolution)}, {WAN_FRAMES} frames"
    return f"{resolution}x{resolution}"


def build_model(name: str, dtype: torch.dtype | None = None, device: str = "cpu") -> tuple[torch.nn.Module, str]:
    """A random-weight denoiser of a published shape (float32 unless ``dtype``). Returns ``(model, family)``."""
    import torch
    from diffusers import DiTTransformer2DModel, LatteTransformer3DModel, PixArtTransformer2DModel, UNet2DConditionModel

    if name not in MODELS:
        raise ValueError(f"bench model={name!r} is unknown; allowed: {sorted(MODELS)} or a checkpoint directory")
    family, cfg, _, _ = MODELS[name]
    classes = {"unet": UNet2DConditionModel, "dit": DiTTransformer2DModel, "pixart": PixArtTransformer2DModel,
               "latte": LatteTransformer3DModel}
    if family in classes:
        cls = classes[family]
    else:
        import diffusers

        cls = getattr(diffusers, next(c for c, f in _MMDIT_CLASSES.items() if f == family))
    torch.manual_seed(0)
    if device == "meta":  # full-size MACs and cache bytes of models that do not fit in memory
        with torch.device("meta"):
            model = cls(**cfg)
        return (model if dtype in (None, torch.float32) else model.to(dtype)).eval(), family
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
    """``"dit"``, ``"pixart"``, ``"latte"``, ``"flux"``, ``"sd3"``, ``"wan"``, ``"qwen"`` or ``"unet"`` (anything
    else is driven like a UNet)."""
    from diffusers import DiTTransformer2DModel, LatteTransformer3DModel, PixArtTransformer2DModel

    for cls in type(model).__mro__:
        if cls.__name__ in _MMDIT_CLASSES:
            return _MMDIT_CLASSES[cls.__name__]
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

    if family in TEXT_TOKENS:
        return _flow_loop(model, family, resolution, batch, steps, guidance, scheduler, seed)
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


def _flow_loop(
    model: torch.nn.Module, family: str, resolution: int, batch: int, steps: int, guidance: float,
    scheduler: Any = None, seed: int = 0,
) -> Callable[[], torch.Tensor]:
    """The flow-matching loop of the FLUX / SD3 / Wan / Qwen-Image pipelines, with their call patterns.

    FLUX is guidance-distilled (one call per step, guidance embedded); SD3 batches CFG as ``[uncond;
    cond]``; Wan and Qwen-Image call the model once per branch inside ``cache_context("cond")`` /
    ``("uncond")``. Euler steps on a static shift-3 sigma schedule (the pipelines' dynamic shift only moves
    the sigmas, not the work). Text embeddings are random, at the published lengths (:data:`TEXT_TOKENS`).
    """
    import contextlib

    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ..models import find_adapter

    p = next(model.parameters())
    dev, dtype = p.device, p.dtype
    sched = scheduler or FlowMatchEulerDiscreteScheduler(shift=3.0)
    cfgd = model.config
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(shape, generator=g) if dev.type != "meta" else torch.empty(shape)).to(dev, dtype)

    guided = guidance > 1.0 and family != "flux"
    per_context = family in ("wan", "qwen")
    rows = 2 * batch if guided and not per_context else batch
    n_txt = TEXT_TOKENS[family]
    lat = resolution // 8
    kw: dict[str, Any] = {}
    if family == "flux":
        h = w = lat // 2
        latents0 = rand(batch, h * w, cfgd.in_channels)
        ids = torch.zeros(h, w, 3)
        ids[..., 1], ids[..., 2] = torch.arange(h)[:, None], torch.arange(w)[None, :]
        kw = dict(encoder_hidden_states=rand(rows, n_txt, cfgd.joint_attention_dim),
                  pooled_projections=rand(rows, cfgd.pooled_projection_dim), img_ids=ids.reshape(-1, 3).to(dev),
                  txt_ids=torch.zeros(n_txt, 3, device=dev))
        if cfgd.guidance_embeds:
            kw["guidance"] = torch.full((rows,), 3.5, device=dev, dtype=dtype)
    elif family == "sd3":
        latents0 = rand(batch, cfgd.in_channels, lat, lat)
        kw = dict(encoder_hidden_states=rand(rows, n_txt, cfgd.joint_attention_dim),
                  pooled_projections=rand(rows, cfgd.pooled_projection_dim))
    elif family == "wan":
        width = wan_width(resolution)
        latents0 = rand(batch, cfgd.in_channels, 1 + (WAN_FRAMES - 1) // 4, lat, width // 8)
        kw = dict(encoder_hidden_states=rand(rows, n_txt, cfgd.text_dim))
    else:  # qwen
        h = w = lat // 2
        latents0 = rand(batch, h * w, cfgd.in_channels)
        kw = dict(encoder_hidden_states=rand(rows, n_txt, cfgd.joint_attention_dim),
                  encoder_hidden_states_mask=torch.ones(rows, n_txt, dtype=torch.long, device=dev),
                  img_shapes=[[(1, h, w)]] * rows)
    scale = find_adapter(model).timestep_scale  # FLUX and Qwen-Image take t / 1000

    def call(x: torch.Tensor, t: torch.Tensor, name: str | None) -> torch.Tensor:
        ctx = model.cache_context(name) if name is not None and hasattr(model, "cache_context") else None
        with ctx or contextlib.nullcontext():
            tt = (t / scale).expand(x.shape[0]).to(dev, dtype)
            return model(x, timestep=tt, return_dict=False, **kw)[0]

    def loop() -> torch.Tensor:
        sched.set_timesteps(steps)
        x = latents0.clone()
        for t in sched.timesteps:
            if per_context:
                out = call(x, t, "cond")
                if guided:
                    unc = call(x, t, "uncond")
                    out = unc + guidance * (out - unc)
            elif guided:
                unc, con = call(torch.cat([x, x]), t, None).chunk(2)
                out = unc + guidance * (con - unc)
            else:
                out = call(x, t, None)
            x = sched.step(out, t, x).prev_sample
        return x

    loop.scheduler = sched  # type: ignore[attr-defined]
    return loop
