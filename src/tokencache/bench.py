"""Benchmark harness: speed, MACs and memory of methods side by side, measured in one process.

Runs a denoising loop (the denoiser plus the scheduler, no text encoder and no VAE) for the baseline
and each method config, alternating runs after a warm-up, on the same inputs. Reports the loop's
wall time (median and range of repeats), speedup vs the baseline, MACs per image counted with
``torch.utils.flop_counter`` (attention included), how much of the MAC reduction shows up as wall
clock, peak memory, cache memory and PSNR of the final latents vs the baseline's.

Full-size models are built from their published configs with random weights (no download): good for
speed and MACs only, never for quality (random weights make caching look free).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import api
from .config import CONFIG_CLASSES, BaseConfig

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

#: name -> (kind, config, default resolution, prediction type)
MODELS: dict[str, tuple[str, dict, int, str]] = {
    "sd15": ("unet", SD15_UNET, 512, "epsilon"),
    "sd21": ("unet", SD21_UNET, 768, "v_prediction"),
    "sdxl": ("unet", SDXL_UNET, 1024, "epsilon"),
    "dit-xl-2": ("dit", DIT_XL2, 256, "epsilon"),
    "pixart-alpha": ("pixart", PIXART_ALPHA, 512, "epsilon"),
}


@dataclass
class Row:
    """One benchmark row (the baseline's is named ``baseline``)."""

    name: str
    loop_s: float = 0.0
    loop_s_min: float = 0.0
    loop_s_max: float = 0.0
    speedup: float = 1.0
    macs_per_image: float = 0.0
    macs_ratio: float = 1.0
    speedup_per_mac_reduction: float = 1.0
    peak_mem_bytes: int = 0
    cache_bytes: int = 0
    psnr_vs_baseline: float = float("inf")
    error: str = ""


def build_model(name: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> tuple[torch.nn.Module, str]:
    """A random-weight denoiser of a published shape. Returns ``(model, kind)``."""
    from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel, UNet2DConditionModel

    if name not in MODELS:
        raise ValueError(f"bench model={name!r} is unknown; allowed: {sorted(MODELS)}")
    kind, cfg, _, _ = MODELS[name]
    cls = {"unet": UNet2DConditionModel, "dit": DiTTransformer2DModel, "pixart": PixArtTransformer2DModel}[kind]
    torch.manual_seed(0)
    model = cls(**cfg).to(device=device, dtype=dtype).eval()
    return model, kind


def denoiser_kind(model: torch.nn.Module) -> str:
    from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel

    if isinstance(model, DiTTransformer2DModel):
        return "dit"
    if isinstance(model, PixArtTransformer2DModel):
        return "pixart"
    return "unet"


def make_loop(
    model: torch.nn.Module, kind: str, resolution: int, batch: int, steps: int, guidance: float,
    scheduler: Any = None, seed: int = 0,
) -> Callable[[], torch.Tensor]:
    """A closure running one seeded denoising loop and returning the final latents."""
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
    latents0 = torch.randn(batch, cfgd.in_channels, lat, lat, generator=g).to(dev, dtype)
    kwargs: dict[str, Any] = {}
    if kind == "unet":
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
    elif kind == "dit":
        labels = torch.arange(batch) % 1000
        kwargs["class_labels"] = torch.cat([torch.full_like(labels, 1000), labels]) if cfg else labels
        kwargs["class_labels"] = kwargs["class_labels"].to(dev)
    else:
        kwargs["encoder_hidden_states"] = torch.randn(rows, 120, cfgd.caption_channels, generator=g).to(dev, dtype)
        kwargs["added_cond_kwargs"] = {"resolution": None, "aspect_ratio": None}

    def loop() -> torch.Tensor:
        sched.set_timesteps(steps)
        x = latents0.clone()
        for t in sched.timesteps:
            inp = torch.cat([x, x]) if cfg else x
            tt = t.expand(inp.shape[0]).to(dev) if kind != "unet" else t
            if kind == "unet":
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


# ---- peers: other tools, run in the same loop where they install and run ---------------------------


def _peer_tomesd(model: torch.nn.Module, loop: Any) -> Callable[[], None]:
    import tomesd

    tomesd.apply_patch(model, ratio=0.5)
    return lambda: tomesd.remove_patch(model)


def _peer_deepcache(model: torch.nn.Module, loop: Any) -> Callable[[], None]:
    from types import SimpleNamespace

    from DeepCache import DeepCacheSDHelper

    helper = DeepCacheSDHelper(pipe=SimpleNamespace(unet=model, scheduler=loop.scheduler))
    helper.set_params(cache_interval=3, cache_branch_id=0)
    helper.enable()
    return helper.disable


def _peer_first_block_cache(model: torch.nn.Module, loop: Any) -> Callable[[], None]:
    from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, apply_first_block_cache

    apply_first_block_cache(model, FirstBlockCacheConfig(threshold=0.05))

    def undo() -> None:
        registry = HookRegistry.check_if_exists_or_initialize(model)
        for name in list(registry.hooks):
            registry.remove_hook(name, recurse=True)

    return undo


#: peer name -> enable(model, loop) returning a disable function. Installed with `pip install tokencache[peers]`.
PEERS: dict[str, Callable[[torch.nn.Module, Any], Callable[[], None]]] = {
    "peer:tomesd": _peer_tomesd,
    "peer:deepcache": _peer_deepcache,
    "peer:first-block-cache": _peer_first_block_cache,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mem(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of ``a`` against reference ``b`` with the reference's value range as peak."""
    a, b = a.float(), b.float()
    mse = torch.mean((a - b) ** 2).item()
    rng = (b.max() - b.min()).item()
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(rng**2 / mse)).item()


def run_bench(
    model: torch.nn.Module,
    configs: dict[str, BaseConfig],
    *,
    peers: list[str] | tuple[str, ...] = (),
    resolution: int,
    steps: int = 50,
    batch: int = 1,
    guidance: float = 7.5,
    repeats: int = 3,
    warmup: int = 1,
    compile: bool = False,
    progress: bool = True,
) -> list[Row]:
    """Time the baseline and every config on ``model`` in one process, alternating runs.

    Args:
        model: the denoiser (random weights are fine for speed and MACs).
        configs: display name -> method config.
        resolution: image side in pixels (latents are ``resolution // 8``).
        steps: denoising steps; guidance > 1 runs the CFG batch ``[uncond; cond]``.
        repeats: timed runs per config (median reported); ``warmup`` untimed runs first.
        compile: wrap the denoiser's blocks with ``torch.compile`` (regional compile).
        peers: names from :data:`PEERS` to run in the same loop; a peer that fails to import or run
            gets a row with its error (its MACs ratio is not counted: NaN).

    Returns:
        Rows, the baseline first; a config that fails gets a row with ``error`` set.
    """
    kind = denoiser_kind(model)
    device = next(model.parameters()).device
    loop = make_loop(model, kind, resolution, batch, steps, guidance)
    if compile and hasattr(model, "compile_repeated_blocks"):
        model.compile_repeated_blocks()
    names = ["baseline", *configs, *peers]
    times: dict[str, list[float]] = {n: [] for n in names}
    outs: dict[str, torch.Tensor] = {}
    rows = {n: Row(n) for n in names}
    macs_full = _baseline_macs(model, kind, resolution, batch, guidance)

    def one(name: str, timed: bool) -> None:
        cfg = configs.get(name)
        undo: Callable[[], None] | None = None
        try:
            if name in PEERS:
                rows[name].macs_ratio = float("nan")
                undo = PEERS[name](model, loop)
            elif name != "baseline" and cfg is None:
                raise ValueError(f"peer {name!r} is unknown; allowed: {sorted(PEERS)}")
            if cfg is not None:
                api.apply(model, cfg, num_inference_steps=steps, cfg=guidance > 1.0)
            _sync(device)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = loop()
            _sync(device)
            dt = time.perf_counter() - t0
            if timed:
                times[name].append(dt)
                outs[name] = out
                if cfg is not None:
                    s = api.summary(model)
                    rows[name].macs_ratio = s.macs_ratio
                    rows[name].cache_bytes = s.cache_bytes
        except Exception as e:  # a failing config gets an error row, never a silent skip
            rows[name].error = f"{type(e).__name__}: {e}"
        finally:
            if cfg is not None:
                api.remove(model)
            if undo is not None:
                try:
                    undo()
                except Exception as e:
                    rows[name].error = rows[name].error or f"disable failed: {type(e).__name__}: {e}"

    total = (warmup + repeats) * len(names)
    bar = _progress(total) if progress else None
    for r in range(warmup + repeats):
        for name in names:
            if rows[name].error:
                continue
            one(name, timed=r >= warmup)
            if bar:
                bar.advance(bar.task_ids[0])
            gc.collect()
    if bar:
        bar.stop()
    base_t = statistics.median(times["baseline"]) if times["baseline"] else float("nan")
    for name in names:
        row = rows[name]
        if row.error or not times[name]:
            continue
        row.loop_s = statistics.median(times[name])
        row.loop_s_min, row.loop_s_max = min(times[name]), max(times[name])
        row.speedup = base_t / row.loop_s
        row.macs_per_image = macs_full * steps * row.macs_ratio / batch  # NaN for peers (not counted)
        row.speedup_per_mac_reduction = row.speedup * row.macs_ratio
        row.psnr_vs_baseline = psnr(outs[name], outs["baseline"]) if name != "baseline" else float("inf")
        row.peak_mem_bytes = _peak_mem(device)
    return [rows[n] for n in names]


def _baseline_macs(model: torch.nn.Module, kind: str, resolution: int, batch: int, guidance: float) -> float:
    """MACs of one baseline denoiser call (all CFG rows), counted on a meta twin."""
    from .stats import count_macs

    with torch.device("meta"):
        twin = type(model).from_config(model.config)
    dtype = next(model.parameters()).dtype
    twin = twin.to(dtype) if dtype != torch.float32 else twin
    captured: dict[str, Any] = {}

    def grab(m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        captured["a"], captured["k"] = args, kwargs
        raise _Stop

    h = model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        make_loop(model, kind, resolution, batch, 1, guidance)()
    except _Stop:
        pass
    finally:
        h.remove()
    from torch.utils._pytree import tree_map

    def meta(x: Any) -> Any:
        return torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x

    args, kwargs = tree_map(meta, (captured["a"], captured["k"]))
    return count_macs(twin, args, kwargs)


class _Stop(Exception):
    pass


def _progress(total: int):
    from rich.progress import Progress

    bar = Progress(transient=True)
    bar.add_task("bench", total=total)
    bar.start()
    return bar


# ---- output ------------------------------------------------------------------------------------


def to_markdown(rows: list[Row], header: str = "") -> str:
    lines = [header] if header else []
    lines += [
        "| config | loop s (median) | speedup | MACs/image (T) | MACs ratio | speedup / MAC reduction "
        "| PSNR vs baseline (dB) | cache MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.name} | error: {r.error} | | | | | | |")
            continue
        lines.append(
            f"| {r.name} | {r.loop_s:.2f} | {r.speedup:.2f}x | {r.macs_per_image / 1e12:.2f} | {r.macs_ratio:.3f} | "
            f"{r.speedup_per_mac_reduction:.2f} | {r.psnr_vs_baseline:.1f} | {r.cache_bytes / 2**20:.0f} |"
        )
    return "\n".join(lines)


def print_table(rows: list[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("config", "loop s", "speedup", "MACs ratio", "speedup/MAC red.", "PSNR dB", "cache MiB", "error"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.name, f"{r.loop_s:.2f}", f"{r.speedup:.2f}x", f"{r.macs_ratio:.3f}",
                  f"{r.speedup_per_mac_reduction:.2f}", f"{r.psnr_vs_baseline:.1f}", f"{r.cache_bytes / 2**20:.0f}",
                  r.error)
    Console().print(t)


def plot(rows: list[Row], path: str | Path, title: str = "") -> Path:
    """Speedup vs PSNR, one point per config, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r.error or r.name == "baseline":
            continue
        ax.scatter(r.speedup, min(r.psnr_vs_baseline, 99.0))
        ax.annotate(r.name, (r.speedup, min(r.psnr_vs_baseline, 99.0)), fontsize=7)
    ax.set_xlabel("measured speedup vs baseline (x)")
    ax.set_ylabel("PSNR of final latents vs baseline (dB)")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_method(spec: str) -> BaseConfig:
    """``method:preset`` (e.g. ``dato:fast``) or a config file path -> config."""
    if Path(spec).suffix in (".yaml", ".yml", ".json"):
        from .config import load_config

        return load_config(spec)
    method, _, preset = spec.partition(":")
    if method not in CONFIG_CLASSES:
        raise ValueError(f"bench method={method!r} is unknown; allowed: {sorted(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[method].preset(preset or "balanced")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="sd15", help=f"one of {sorted(MODELS)} or a local diffusers checkpoint path")
    p.add_argument("--methods", default="dato:fast,dato:balanced,deepcache:balanced,tome:balanced",
                   help="comma-separated method:preset specs or config files")
    p.add_argument("--peers", default="", help=f"comma-separated peers to run alongside: {sorted(PEERS)}")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default 7.5 for UNets, 1.5 for DiT)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", dest="json_out", default=None, help="write rows as JSON to this path ('-' = stdout)")
    p.add_argument("--markdown", default=None, help="write a markdown table to this path")
    p.add_argument("--plot", default=None, help="write a speedup-vs-PSNR PNG to this path")


def run(args: argparse.Namespace) -> int:
    dtype = getattr(torch, args.dtype)
    if args.model in MODELS:
        model, kind = build_model(args.model, dtype, args.device)
        res = args.resolution or MODELS[args.model][2]
    else:
        from diffusers import DiffusionPipeline

        path = Path(args.model)
        if not path.exists():
            raise FileNotFoundError(f"--model {args.model!r}: no such checkpoint directory")
        pipe = DiffusionPipeline.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        model = (getattr(pipe, "unet", None) or pipe.transformer).to(args.device).eval()
        kind = denoiser_kind(model)
        res = args.resolution or model.config.sample_size * 8
    guidance = args.guidance if args.guidance is not None else (7.5 if kind == "unet" else 1.5)
    configs = {s: parse_method(s) for s in args.methods.split(",") if s}
    peers = [s for s in args.peers.split(",") if s]
    rows = run_bench(model, configs, peers=peers, resolution=res, steps=args.steps, batch=args.batch, guidance=guidance,
                     repeats=args.repeats, warmup=args.warmup, compile=args.compile)
    title = (f"{args.model} {res}x{res}, {args.steps} DDIM steps, CFG {guidance}, batch {args.batch}, "
             f"{args.dtype}, {args.device}, torch {torch.__version__}")
    if args.json_out == "-":
        print(json.dumps({"title": title, "rows": [asdict(r) for r in rows]}, indent=2))
    else:
        print_table(rows, title)
    if args.json_out and args.json_out != "-":
        Path(args.json_out).write_text(json.dumps({"title": title, "rows": [asdict(r) for r in rows]}, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(to_markdown(rows, f"**{title}**\n") + "\n")
    if args.plot:
        plot(rows, args.plot, title)
    return 0 if all(not r.error for r in rows) else 1
