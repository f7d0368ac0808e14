"""ToCa / DuCa / FORA on tiny DiT, PixArt and Latte transformers inside the real diffusers pipelines."""

from __future__ import annotations

import math

import pytest
import torch

import tokencache as tc
from conftest import tiny_unet, tiny_vae
from tokencache.config import TokenCacheSpec as DiTSpec
from tokencache.core import tokens as T

# ---- token math: exact values -------------------------------------------------------------------


def test_vnorm_score_prefers_small_values():
    v = torch.tensor([[[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])  # 2 heads of dim 2; norms (5, 0), (0, 0)
    s = T.vnorm_score(v, heads=2)
    raw = torch.tensor([[(1 - 5) + (1 - 0), 2.0]])
    assert torch.allclose(s, raw / raw.norm())
    assert s[0, 1] > s[0, 0]


def test_attention_received_score_uniform_and_peaked():
    q = torch.zeros(1, 4, 2)
    s = T.attention_received_score(q, torch.zeros(1, 4, 2), heads=1, scale=1.0)
    assert torch.allclose(s, torch.full((1, 4), 0.5))  # every column gets 1; L2-normalised 1/sqrt(4)
    k = torch.zeros(1, 4, 2)
    k[0, 2, 0] = 100.0  # every query attends to token 2
    s = T.attention_received_score(torch.ones(1, 4, 2), k, heads=1, scale=1.0)
    assert torch.allclose(s, torch.tensor([[0.0, 0.0, 1.0, 0.0]]), atol=1e-6)


def test_cross_attention_entropy_uniform_and_masked():
    q, k = torch.zeros(2, 3, 4), torch.zeros(2, 8, 4)
    h = T.cross_attention_entropy(q, k, heads=2, scale=0.5)
    assert torch.allclose(h, torch.full((2, 3), math.log(8)), atol=1e-5)
    bias = torch.zeros(2, 1, 8)
    bias[:, :, 4:] = -10000.0
    h = T.cross_attention_entropy(q, k, heads=2, scale=0.5, bias=bias)
    assert torch.allclose(h, torch.full((2, 3), math.log(4)), atol=1e-5)
    assert torch.allclose(T.entropy_score(torch.tensor([[0.0, 0.0]])), torch.tensor([[2**-0.5, 2**-0.5]]))


def test_staleness_share_and_selection():
    assert torch.equal(T.staleness_term(torch.tensor([[0, 1, 3]]), 0.25, 2), torch.tensor([[0.0, 0.125, 0.375]]))
    s = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    assert torch.equal(T.share_cfg_halves(s), torch.tensor([[2.0, 4.0], [2.0, 4.0]]))
    ties = torch.tensor([[0.5, 0.9, 0.5, 0.1]])
    assert torch.equal(T.select_fresh(ties, 2), torch.tensor([[1, 0]]))  # ties: lower index first
    assert T.fresh_count(0.3, 10) == 3 and T.fresh_count(1.7, 10) == 10 and T.fresh_count(-0.2, 10) == 0
    with pytest.raises(ValueError, match="k=5"):
        T.select_fresh(torch.zeros(1, 4), 5)


def test_spatial_bonus_on_a_non_square_grid():
    # 2 x 3 grid, cells of 2 x 2: {0, 1, 3, 4} and the cropped {2, 5}
    s = torch.tensor([[0.1, 0.4, 0.2, 0.3, 0.0, 0.6]])
    out = T.spatial_bonus(s, 2, 3, 2, 0.5)
    assert torch.allclose(out, torch.tensor([[0.1, 0.7, 0.2, 0.3, 0.0, 0.9]]))
    assert torch.equal(T.spatial_bonus(s, 2, 3, 2, 0.0), s)
    neg = T.spatial_bonus(-s - 1, 2, 3, 2, 0.5)  # the bonus never becomes a penalty
    assert (neg >= -s - 1).all()


# ---- configs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (tc.ToCaConfig, {"fresh_ratio": 1.5}, "fresh_ratio"),
        (tc.ToCaConfig, {"interval": 0}, "interval"),
        (tc.ToCaConfig, {"score": "entropy"}, "score"),
        (tc.ToCaConfig, {"partial_modules": ["mlp"]}, "partial_modules"),
        (tc.ToCaConfig, {"module_weights": {"mlp": 1.0}}, "module_weights"),
        (tc.ToCaConfig, {"first_full_steps": 0}, "first_full_steps"),
        (tc.DuCaConfig, {"cycle": "CFA"}, "cycle"),
        (tc.DuCaConfig, {"cycle": "FXA"}, "cycle"),
        (tc.FORAConfig, {"interval": 0}, "interval"),
    ],
)
def test_bad_config_values_name_field_value_and_range(cls, kwargs, field):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}.*allowed"):
        cls(**kwargs)


def test_plans_follow_cycles_for_any_step_count():
    kinds = lambda plan: "".join(a.kind[0].upper() for a in plan)  # noqa: E731
    assert kinds(tc.DuCaConfig(cycle="FCA", first_full_steps=1).plan(7)) == "FPAFPAF"
    assert kinds(tc.DuCaConfig(cycle="FAC", first_full_steps=3).plan(8)) == "FFFAPFAP"
    assert kinds(tc.ToCaConfig(interval=3, first_full_steps=2).plan(7)) == "FFPPFPP"
    assert kinds(tc.FORAConfig(interval=2).plan(5)) == "FPFPF"
    for name in ("quality", "balanced", "fast"):
        for cls in (tc.ToCaConfig, tc.DuCaConfig, tc.FORAConfig):
            assert len(cls.preset(name).plan(13)) == 13
    plan = tc.ToCaConfig(fresh_ratio=0.2, step_weight=0.5, interval=2).plan(4)
    assert plan[1].ratio == pytest.approx(0.2 * (1.5 - 1.0 * 1 / 4))  # f_step = 1 + w - 2 w s/T


def test_config_round_trip(tmp_path):
    cfg = tc.DuCaConfig.preset("fast", score="random")
    assert tc.load_config(cfg.save(tmp_path / "d.yaml")) == cfg


# ---- tiny models --------------------------------------------------------------------------------


def tiny_dit(layers: int = 3):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    return DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=layers,
        sample_size=8, patch_size=2, num_embeds_ada_norm=1000, norm_num_groups=8,
    ).eval()


def tiny_pixart(layers: int = 2):
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(0)
    return PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=layers,
        sample_size=8, patch_size=2, cross_attention_dim=16, caption_channels=24, norm_num_groups=8,
        use_additional_conditions=False,
    ).eval()


def make_dit_pipe():
    """A `DiTPipeline` around `tiny_dit()` (DDIM, progress bar off)."""
    from diffusers import DDIMScheduler, DiTPipeline

    pipe = DiTPipeline(transformer=tiny_dit(), vae=tiny_vae(), scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_pixart_pipe():
    """A `PixArtAlphaPipeline` around `tiny_pixart()` (prompt embeddings passed directly, DPM-Solver)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline

    pipe = PixArtAlphaPipeline(
        tokenizer=None, text_encoder=None, vae=tiny_vae(), transformer=tiny_pixart(),
        scheduler=DPMSolverMultistepScheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def dit_pipe():
    pipe = make_dit_pipe()
    yield pipe
    tc.remove(pipe)


@pytest.fixture(scope="module")
def pixart_pipe():
    pipe = make_pixart_pipe()
    yield pipe
    tc.remove(pipe)


@pytest.fixture(autouse=True)
def _clean(request):
    yield
    for name in ("dit_pipe", "pixart_pipe"):
        if name in request.fixturenames:
            tc.remove(request.getfixturevalue(name))


def run_dit(pipe, steps=6, labels=(1,), guidance=1.5):
    g = torch.Generator().manual_seed(0)
    return pipe(class_labels=list(labels), num_inference_steps=steps, guidance_scale=guidance, generator=g,
                output_type="np").images


_G = torch.Generator().manual_seed(1)
PROMPT = torch.randn(1, 7, 24, generator=_G)
NEGATIVE = torch.randn(1, 7, 24, generator=_G)


def run_pixart(pipe, steps=6, guidance=4.5, height=16, width=24, n=1):
    mask = torch.ones(1, 7)
    mask[:, 5:] = 0
    return pipe(
        negative_prompt=None, prompt_embeds=PROMPT, prompt_attention_mask=mask, negative_prompt_embeds=NEGATIVE,
        negative_prompt_attention_mask=torch.ones(1, 7), num_inference_steps=steps, guidance_scale=guidance,
        height=height, width=width, num_images_per_prompt=n, use_resolution_binning=False,
        generator=torch.Generator().manual_seed(0), output_type="latent",
    ).images


def _counter(module):
    calls = {"n": 0}
    module.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    return calls


# ---- DiT ------------------------------------------------------------------------------------------


def test_dit_remove_restores_bit_identical_outputs_and_frees_caches(dit_pipe):
    base = run_dit(dit_pipe)
    tc.apply(dit_pipe, tc.DuCaConfig.preset("fast"))
    cached = run_dit(dit_pipe)
    assert not (cached == base).all() and not torch.isnan(torch.as_tensor(cached)).any()
    handle = dit_pipe.transformer._tokencache
    assert tc.summary(dit_pipe).cache_bytes > 0 and handle.state.cache_bytes() == 0  # freed after the call
    tc.remove(dit_pipe)
    assert (run_dit(dit_pipe) == base).all()
    assert not any(hasattr(m, "_diffusers_hook") for m in dit_pipe.transformer.modules())  # registries deleted


@pytest.mark.parametrize(
    "cfg",
    [
        tc.ToCaConfig(interval=1),
        tc.FORAConfig(interval=1),
        tc.ToCaConfig(interval=3, fresh_ratio=1.0, module_weights={"attn1": 1.0, "ff": 1.0},
                      partial_modules=["attn1", "ff"], spatial_bonus=0.6),
    ],
)
def test_dit_all_fresh_equals_baseline(dit_pipe, cfg):
    base = run_dit(dit_pipe, steps=5)
    tc.apply(dit_pipe, cfg)
    out = run_dit(dit_pipe, steps=5)
    assert abs(out - base).max() <= 1e-6
    s = tc.summary(dit_pipe)
    assert s.macs_ratio == pytest.approx(1.0) and s.tokens_computed_fraction == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("cfg", "counts"),
    [
        (tc.ToCaConfig(interval=3, first_full_steps=2), (4, 5, 0)),  # F F C C F C C F C
        (tc.DuCaConfig(cycle="FCA"), (3, 3, 3)),
        (tc.DuCaConfig(cycle="FACAC", first_full_steps=1), (2, 3, 4)),  # F A C A C F A C A
        (tc.FORAConfig(interval=3), (3, 6, 0)),
    ],
)
def test_dit_step_kind_counts_match_the_plan_and_macs_fall(dit_pipe, cfg, counts):
    tc.apply(dit_pipe, cfg)
    run_dit(dit_pipe, steps=9)
    s = tc.summary(dit_pipe)
    assert (s.steps_full, s.steps_partial, s.steps_aggressive, s.steps_total) == (*counts, 9)
    assert 0.0 < s.macs_ratio < 1.0 and set(s.tokens_computed_by_module) == {"attn1", "ff"}
    assert s.tokens_computed_by_module["attn1"] == pytest.approx(counts[0] / 9)


def test_dit_aggressive_steps_skip_every_block(dit_pipe):
    net = dit_pipe.transformer
    attn = [_counter(b.attn1) for b in net.transformer_blocks]
    ff = [_counter(b.ff) for b in net.transformer_blocks]
    proj = _counter(net.proj_out_2)
    tc.apply(dit_pipe, tc.DuCaConfig(cycle="FA"))
    run_dit(dit_pipe, steps=6)
    assert [c["n"] for c in attn] == [3] * 3 and [c["n"] for c in ff] == [3] * 3  # full steps only
    assert proj["n"] == 6  # the output layers run on every step
    rec = net._tokencache.state.last_records[1]
    assert rec.action.kind == "aggressive" and rec.skipped == [f"transformer_blocks.{i}" for i in range(3)]


def test_dit_fora_interval_two_halves_the_block_macs(dit_pipe):
    tc.apply(dit_pipe, tc.FORAConfig(interval=2))
    run_dit(dit_pipe, steps=4)
    s = tc.summary(dit_pipe)
    h = dit_pipe.transformer._tokencache
    key = h.state.last_key
    modules = sum(h.book.macs(key, n, "full") for n in h.token_modules)
    eps = 1.0 - modules / s.macs_full_step  # MACs outside attn1/ff (embeddings, adaLN, output layers)
    assert 0.0 < eps < 0.2
    assert s.macs_ratio == pytest.approx((1.0 + eps) / 2, rel=1e-6)


def test_dit_guidance_one_odd_batch_and_other_step_counts(dit_pipe):
    tc.apply(dit_pipe, tc.ToCaConfig.preset("balanced"))
    out = run_dit(dit_pipe, steps=7, labels=(1, 2, 3), guidance=1.0)
    assert out.shape[0] == 3 and not torch.isnan(torch.as_tensor(out)).any()
    s = tc.summary(dit_pipe)
    assert s.steps_total == 7 and s.steps_partial > 0
    out = run_dit(dit_pipe, steps=4, labels=(5, 6))  # CFG batch of 4, another step count, same handle
    assert out.shape[0] == 2 and tc.summary(dit_pipe).steps_total == 4


def test_dit_cfg_halves_share_the_recomputed_rows(dit_pipe):
    ff = dit_pipe.transformer.transformer_blocks[1].ff
    fresh = []
    ff.net[0].register_forward_pre_hook(lambda m, a: fresh.append(a[0].shape))
    tc.apply(dit_pipe, tc.ToCaConfig(interval=2, fresh_ratio=0.25, module_weights={"ff": 1.0}, score="random"))
    seen = []
    ff.register_forward_hook(lambda m, a, o: seen.append((a[0].clone(), o.clone())))
    run_dit(dit_pipe, steps=2, labels=(1,))
    (x0, y0), (x1, y1) = seen
    assert fresh[1] == (2, 4, 16)  # 25% of 16 tokens, both CFG rows
    changed = (y1 != y0).any(-1)  # (2, 16): rows recomputed at the partial step
    assert torch.equal(changed[0], changed[1]) and int(changed[0].sum()) == 4
    idx = changed[0].nonzero().squeeze(1)
    assert x1.shape[1] == 4  # the norm hands ff only the fresh rows (in selection order)
    got, exp = y1[:, idx], ff.net[2](ff.net[1](ff.net[0](x1)))
    assert torch.allclose(got[:, got[0, :, 0].argsort()], exp[:, exp[0, :, 0].argsort()], atol=1e-6)


def test_staleness_rotates_through_tokens(dit_pipe):
    ff = dit_pipe.transformer.transformer_blocks[0].ff
    tc.apply(dit_pipe, tc.ToCaConfig(interval=5, fresh_ratio=0.25, module_weights={"ff": 1.0}, staleness_weight=1e3,
                                     score="vnorm", spatial_bonus=0.0))
    outs = []
    ff.register_forward_hook(lambda m, a, o: outs.append(o.clone()))
    run_dit(dit_pipe, steps=5)
    picked = [(outs[i] != outs[i - 1]).any(-1)[0] for i in range(2, 5)]  # partial steps 2..4 vs the one before
    assert all(int(p.sum()) == 4 for p in picked)
    assert not (picked[0] & picked[1]).any() and not (picked[1] & picked[2]).any()  # least recently refreshed first


def test_the_cfg_shared_score_is_kept_until_the_next_full_step(dit_pipe, monkeypatch):
    """The shared V-norm score is formed once per full step and block, and gives what forming it every time gives."""
    from tokencache.methods import token_cache

    cfg = tc.ToCaConfig(interval=3, fresh_ratio=0.25, module_weights={"ff": 1.0}, score="vnorm")
    made = []
    share = token_cache.TokenModuleHook._cfg_shared
    hook = token_cache.TokenModuleHook
    monkeypatch.setattr(hook, "_cfg_shared", lambda self, st, s: made.append(1) or share(self, st, s))

    def images():
        tc.apply(dit_pipe, cfg)
        try:
            return run_dit(dit_pipe, steps=9)
        finally:
            tc.remove(dit_pipe)

    kept = images()
    kept_count = len(made)
    made.clear()
    monkeypatch.setattr(hook, "_kept_shared", lambda self, st, data, key, s: self._cfg_shared(st, s))
    assert (images() == kept).all()  # a kept score that outlived its full step would change the choice
    blocks = len(dit_pipe.transformer.transformer_blocks)
    assert kept_count == 3 * blocks and len(made) == 6 * blocks  # 3 cycles of F, P, P: once per cycle, not per step


def test_gates_use_the_current_timestep():
    net = tiny_dit()
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([3])

    def call(t):
        with torch.no_grad():
            return net(x, timestep=torch.tensor([t]), class_labels=labels).sample

    tc.apply(net, tc.FORAConfig(interval=2), num_inference_steps=2)
    full = call(500)
    same = call(500)  # partial step: every module returns its cache
    tc.remove(net)
    tc.apply(net, tc.FORAConfig(interval=2), num_inference_steps=2)
    call(500)
    other_t = call(100)
    tc.remove(net)
    assert torch.allclose(same, full, atol=1e-6)  # pre-gate caches + same inputs reproduce the full step
    assert (other_t - same).abs().max() > 1e-3  # gates / modulation follow the new timestep
    assert (call(100) - other_t).abs().max() > 1e-6  # ...but the module outputs were cached


def test_dit_aggressive_output_depends_on_timestep_not_input():
    net = tiny_dit()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    labels = torch.tensor([3])

    def call(inp, t):
        with torch.no_grad():
            return net(inp, timestep=torch.tensor([t]), class_labels=labels).sample

    outs = []
    for inp, t in ((x, 300), (y, 300), (x, 200)):
        tc.apply(net, tc.DuCaConfig(cycle="FA"), num_inference_steps=2)
        call(x, 500)
        outs.append(call(inp, t))
        tc.remove(net)
    assert torch.equal(outs[0], outs[1]) and (outs[0] - outs[2]).abs().max() > 1e-4


def test_dit_rejects_cross_entropy_and_unet_rejects_toca(sd_components):
    net = tiny_dit(layers=1)
    with pytest.raises(ValueError, match="score='cross_entropy'.*allowed"):
        tc.apply(net, tc.ToCaConfig(score="cross_entropy"))
    assert not tc.is_applied(net)
    with pytest.raises(TypeError, match="transformer"):
        tc.apply(tiny_unet(), tc.ToCaConfig())


# ---- PixArt ---------------------------------------------------------------------------------------


def test_pixart_non_square_toca_duca_and_baseline_equivalence(pixart_pipe):
    base = run_pixart(pixart_pipe)
    assert base.shape == (1, 4, 8, 12)
    weights = {"attn1": 1.0, "attn2": 1.0, "ff": 1.0}
    everything = tc.ToCaConfig(interval=3, fresh_ratio=1.0, module_weights=weights,
                               partial_modules=["attn1", "attn2", "ff"], score="cross_entropy", spatial_grid=4)
    tc.apply(pixart_pipe, everything)
    assert (run_pixart(pixart_pipe) - base).abs().max() <= 1e-5
    tc.remove(pixart_pipe)
    for cfg in (tc.ToCaConfig.preset("balanced", score="cross_entropy", spatial_grid=4),
                tc.ToCaConfig(score="attention", partial_modules=["attn1", "attn2", "ff"]),
                tc.DuCaConfig.preset("fast")):
        tc.apply(pixart_pipe, cfg)
        out = run_pixart(pixart_pipe)
        s = tc.summary(pixart_pipe)
        assert not out.isnan().any() and not torch.equal(out, base)
        assert set(s.tokens_computed_by_module) == {"attn1", "attn2", "ff"}
        assert 0.0 < s.tokens_computed_by_module["attn2"] < 1.0 and 0.0 < s.macs_ratio < 1.0
        tc.remove(pixart_pipe)
    assert torch.equal(run_pixart(pixart_pipe), base)


def test_pixart_sigma_guidance_one_and_odd_batch(pixart_pipe):
    from diffusers import PixArtSigmaPipeline

    sigma = PixArtSigmaPipeline(**pixart_pipe.components)
    sigma.set_progress_bar_config(disable=True)
    tc.apply(sigma, tc.ToCaConfig.preset("fast"))
    try:
        out = run_pixart(sigma, steps=5, guidance=1.0, n=3, height=24, width=16)
        assert out.shape == (3, 4, 12, 8) and not out.isnan().any()
        s = tc.summary(sigma)
        assert s.steps_total == 5 and s.steps_partial == 4
    finally:
        tc.remove(sigma)


# ---- Latte ----------------------------------------------------------------------------------------


def test_latte_spatial_and_temporal_blocks_are_cached():
    from diffusers import DDIMScheduler, LattePipeline, LatteTransformer3DModel

    torch.manual_seed(0)
    net = LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, sample_size=8,
        patch_size=2, cross_attention_dim=16, caption_channels=24, video_length=3,
    ).eval()
    pipe = LattePipeline(tokenizer=None, text_encoder=None, vae=tiny_vae(), transformer=net, scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)

    def run():
        return pipe(negative_prompt=None, prompt_embeds=PROMPT, negative_prompt_embeds=NEGATIVE, num_inference_steps=6,
                    guidance_scale=7.5, video_length=3, height=16, width=16,
                    generator=torch.Generator().manual_seed(0), output_type="latent").frames

    base = run()
    temporal_ff = _counter(net.temporal_transformer_blocks[1].ff)
    tc.apply(pipe, tc.DuCaConfig(cycle="FCA", fresh_ratio=0.5))  # temporal ff: 3 frames -> k = floor(0.8 * 3) = 2
    out = run()
    s = tc.summary(pipe)
    assert not out.isnan().any() and not torch.equal(out, base)
    assert (s.steps_full, s.steps_partial, s.steps_aggressive) == (2, 2, 2)
    assert temporal_ff["n"] == 4  # full and conservative steps; aggressive steps skip the block
    h = net._tokencache
    assert "temporal_transformer_blocks.1.ff" in h.token_modules
    assert h.state.last_records[1].partial["temporal_transformer_blocks.1.ff"] == (2, 3)
    assert h.state.last_records[2].skipped[-1] == "temporal_transformer_blocks.1"
    tc.remove(pipe)
    tc.apply(pipe, tc.ToCaConfig(interval=1))
    assert (run() - base).abs().max() <= 1e-6
    tc.remove(pipe)
    assert torch.equal(run(), base)


def test_spec_defaults_follow_authors_cfg_sharing():
    assert DiTSpec(score="vnorm").shares_cfg and not DiTSpec(score="attention").shares_cfg
    assert DiTSpec(score="attention", share_cfg_selection=True).shares_cfg
