"""DaTo / DeepCache / ToMe on tiny SD UNets inside the real diffusers pipeline classes."""

from __future__ import annotations

import pytest
import torch

import tokencache as tc
from conftest import run_sd, tiny_text_encoder, tiny_unet, write_clip_tokenizer
from tokencache.core.state import ContextStates
from tokencache.methods.unet_branch import DiffScoreTracker, PrunedSelfAttentionHook
from tokencache.models.sd_unet import unet_units


def _counter(module):
    calls = {"n": 0}
    module.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    return calls


def test_unit_layout_matches_ldm_indexing():
    down, up, n_in = unet_units(tiny_unet())
    assert n_in == 6  # conv_in + down0 (2 layers + downsampler) + down1 (2 layers)
    assert down[0] == (1, ["down_blocks.0.resnets.0", "down_blocks.0.attentions.0"])
    assert down[2] == (3, ["down_blocks.0.downsamplers.0"])
    assert up[-1] == (0, ["up_blocks.1.resnets.2", "up_blocks.1.attentions.2"])  # last layer is j = 0


def test_remove_restores_bit_identical_outputs(sd_pipe):
    base = run_sd(sd_pipe, steps=6)
    tc.apply(sd_pipe, tc.DaToConfig.preset("fast"))
    cached = run_sd(sd_pipe, steps=6)
    assert not torch.equal(cached, base)
    tc.remove(sd_pipe)
    assert torch.equal(run_sd(sd_pipe, steps=6), base)
    tc.remove(sd_pipe)  # a second remove is a no-op


def test_remove_deletes_the_hook_registries_it_created(sd_pipe):
    attrs = {n: set(vars(m)) for n, m in sd_pipe.unet.named_modules()}
    tc.apply(sd_pipe, tc.DaToConfig.preset("fast"))
    assert sum(hasattr(m, "_diffusers_hook") for m in sd_pipe.unet.modules()) > 10
    run_sd(sd_pipe, steps=4)
    tc.remove(sd_pipe)
    assert not any(hasattr(m, "_diffusers_hook") for m in sd_pipe.unet.modules())
    assert {n: set(vars(m)) for n, m in sd_pipe.unet.named_modules()} == attrs  # no `forward` left behind either


def test_users_own_diffusers_hooks_survive_apply_and_remove(sd_components):
    from diffusers import StableDiffusionPipeline
    from diffusers.hooks import HookRegistry, ModelHook

    class Counting(ModelHook):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def pre_forward(self, module, *args, **kwargs):
            self.calls += 1
            return args, kwargs

    unet = tiny_unet()
    unet.enable_group_offload(torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1)
    attn1 = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1  # tokencache prunes this one
    mine = [Counting(), Counting()]
    for module, hook in zip((unet, attn1), mine):
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, "user.count")

    def layout():
        hooked = ((n, m._diffusers_hook) for n, m in unet.named_modules() if hasattr(m, "_diffusers_hook"))
        return {n: list(reg._hook_order) for n, reg in hooked}

    before = layout()
    assert before[""] == ["group_offloading", "user.count"] and before["down_blocks.0"] == ["group_offloading"]
    pipe = StableDiffusionPipeline(**{**sd_components, "unet": unet})
    pipe.set_progress_bar_config(disable=True)
    base = run_sd(pipe, steps=4)
    tc.apply(pipe, tc.DaToConfig.preset("fast"))
    assert not torch.equal(run_sd(pipe, steps=4), base)
    tc.remove(pipe)
    assert layout() == before  # the user's registries and hooks stay; tokencache's registries are gone
    calls = [h.calls for h in mine]
    assert torch.equal(run_sd(pipe, steps=4), base)
    assert [h.calls - c for h, c in zip(mine, calls)] == [4, 4]  # and they still run (one UNet call per step)


def test_all_full_and_zero_ratio_equals_baseline(sd_pipe):
    base = run_sd(sd_pipe, steps=6)
    tc.apply(sd_pipe, tc.DaToConfig(cache_plan=["full"], prune_ratio=0.0))
    assert (run_sd(sd_pipe, steps=6) - base).abs().max() <= 1e-6
    s = tc.summary(sd_pipe)
    assert s.steps_full == 6 and s.macs_ratio == pytest.approx(1.0) and s.tokens_computed_fraction == 1.0


def test_deepcache_skips_exactly_the_deep_units(sd_pipe):
    unet = sd_pipe.unet
    shallow = _counter(unet.up_blocks[1].resnets[2].conv1)  # j = 0: runs every step
    deeper_up = _counter(unet.up_blocks[1].resnets[1].conv1)  # j = 1: full steps only
    down = _counter(unet.down_blocks[0].resnets[0].conv1)  # input unit 1: full steps only
    mid = _counter(unet.mid_block.resnets[0].conv1)
    tc.apply(sd_pipe, tc.DeepCacheConfig(interval=3, branch=0))
    run_sd(sd_pipe, steps=7)
    assert shallow["n"] == 7
    assert deeper_up["n"] == down["n"] == mid["n"] == 3  # steps 0, 3, 6
    s = tc.summary(sd_pipe)
    assert (s.steps_full, s.steps_partial, s.steps_reused) == (3, 4, 0)
    assert 0.0 < s.macs_ratio < 1.0


def test_depth_two_runs_first_down_layer_and_two_last_up_layers(sd_pipe):
    unet = sd_pipe.unet
    d0 = _counter(unet.down_blocks[0].resnets[0].conv1)
    d1 = _counter(unet.down_blocks[0].resnets[1].conv1)
    u1 = _counter(unet.up_blocks[1].resnets[1].conv1)
    u0 = _counter(unet.up_blocks[1].resnets[0].conv1)
    tc.apply(sd_pipe, tc.DaToConfig(cache_plan=["full", 2, 2, 2], prune_ratio=0.0))
    run_sd(sd_pipe, steps=4)
    assert (d0["n"], d1["n"], u1["n"], u0["n"]) == (4, 1, 4, 1)
    rec = sd_pipe.unet._tokencache.state.last_records[1]
    assert "mid_block" in rec.skipped and "down_blocks.1" in rec.skipped and "up_blocks.0" in rec.skipped


def test_reuse_step_returns_previous_prediction_without_running_the_unet(sd_pipe):
    conv_in = _counter(sd_pipe.unet.conv_in)
    tc.apply(sd_pipe, tc.DaToConfig(cache_plan=["full", "reuse"], prune_ratio=0.0))
    outs = []
    sd_pipe.unet.register_forward_hook(lambda m, a, k, o: outs.append(o[0].clone()), with_kwargs=True)
    run_sd(sd_pipe, steps=4)
    assert conv_in["n"] == 2
    assert torch.equal(outs[1], outs[0]) and torch.equal(outs[3], outs[2])
    assert tc.summary(sd_pipe).steps_reused == 2


def test_pruned_token_counts_and_macs_match_the_plan(sd_pipe):
    r = 0.5
    tc.apply(sd_pipe, tc.ToMeConfig(ratio=r))
    run_sd(sd_pipe, steps=3)
    handle = sd_pipe.unet._tokencache
    n_tok = 8 * 8  # 16x16 image -> 8x8 latent (the tiny VAE halves) -> level 0 grid
    for rec in handle.state.last_records:
        assert len(rec.partial) == 5  # level 0: 2 attentions in down_blocks.0, 3 in up_blocks.1
        assert all(v == (n_tok - int(n_tok * r), n_tok) for v in rec.partial.values())
    s = tc.summary(sd_pipe)
    assert s.tokens_computed_fraction == pytest.approx(1 - r)
    assert s.steps_full == 3 and 0.0 < s.macs_ratio < 1.0


def test_macs_are_flop_counter_exact_for_full_model(sd_pipe):
    from tokencache.core.accounting import count_macs

    tc.apply(sd_pipe, tc.DaToConfig(cache_plan=["full"], prune_ratio=0.0))
    run_sd(sd_pipe, steps=2)
    s = tc.summary(sd_pipe)
    args, kwargs = sd_pipe.unet._tokencache.book.inputs[(sd_pipe.unet._tokencache.state.last_key, "", "full")]
    with torch.device("meta"):
        twin = type(sd_pipe.unet).from_config(sd_pipe.unet.config)
    assert s.macs_full_step == count_macs(twin, args, kwargs) > 0


def test_cfg_alignment_copies_uncond_base_positions():
    st = ContextStates(lambda n: [], 1).current
    st.key = ((2, 4, 4, 4), torch.float32, torch.device("cpu"))
    st.cfg = True
    tracker = st.get("unet.diffscore", DiffScoreTracker)
    torch.manual_seed(0)
    tracker.push(torch.randn(2, 4, 4, 4))
    tracker.push(torch.randn(2, 4, 4, 4))
    for align, same in ((True, True), (False, False)):
        spec = tc.DaToConfig(align_cfg=align, score_noise=0.0).prune_spec()
        hook = PrunedSelfAttentionHook(st.owner, "x", lambda shape: (4, 4), spec)
        st.objects.pop("unet.noise", None)
        base = hook._base(st, 2, 16, 4, 4, torch.device("cpu"))
        assert torch.equal(base[0], base[1]) is same


def test_diffscore_drives_base_selection_when_noise_is_off():
    from tokencache.core import tokens as T

    st = ContextStates(lambda n: [], 1).current
    st.key = ((1, 4, 4, 4), torch.float32, torch.device("cpu"))
    tracker = st.get("unet.diffscore", DiffScoreTracker)
    e1, e2 = torch.zeros(1, 4, 4, 4), torch.rand(1, 4, 4, 4)
    tracker.push(e1)
    assert tracker.pooled(4, 4) is None  # one output is not enough for a DiffScore
    tracker.push(e2)
    spec = tc.DaToConfig(score_noise=0.0).prune_spec()
    hook = PrunedSelfAttentionHook(st.owner, "x", lambda shape: (4, 4), spec)
    expected = T.patch_argmax(T.diff_score(e2, e1).reshape(1, 16), 4, 4, 2)
    assert torch.equal(hook._base(st, 1, 16, 4, 4, torch.device("cpu")), expected)


@pytest.mark.parametrize(
    "sched_name",
    ["DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
     "DPMSolverMultistepScheduler", "HeunDiscreteScheduler"],
)
def test_any_scheduler_counts_every_denoiser_call(sd_pipe, sched_name):
    import diffusers

    sd_pipe.scheduler = getattr(diffusers, sched_name).from_config(sd_pipe.scheduler.config)
    calls = _counter(sd_pipe.unet)
    tc.apply(sd_pipe, tc.DaToConfig.preset("balanced"))
    out = run_sd(sd_pipe, steps=5)
    s = tc.summary(sd_pipe)
    assert s.steps_total == calls["n"] >= 5 and s.steps_full >= 1
    assert torch.isfinite(out).all()


def test_scheduler_swapped_after_apply_is_followed(sd_pipe):
    from diffusers import EulerDiscreteScheduler

    tc.apply(sd_pipe, tc.DaToConfig.preset("balanced"))
    run_sd(sd_pipe, steps=4)
    sd_pipe.scheduler = EulerDiscreteScheduler.from_config(sd_pipe.scheduler.config)
    run_sd(sd_pipe, steps=6)
    assert tc.summary(sd_pipe).steps_total == 6


def test_state_resets_between_calls_and_on_shape_or_step_changes(sd_pipe):
    tc.apply(sd_pipe, tc.DaToConfig.preset("fast"))
    run_sd(sd_pipe, steps=8)
    run_sd(sd_pipe, steps=5, num_images_per_prompt=2)  # batch and step count change
    second = run_sd(sd_pipe, steps=5, num_images_per_prompt=2)
    tc.remove(sd_pipe)
    tc.apply(sd_pipe, tc.DaToConfig.preset("fast"))
    fresh = run_sd(sd_pipe, steps=5, num_images_per_prompt=2)
    assert torch.equal(second, fresh)
    assert tc.summary(sd_pipe).steps_total == 5
    assert sd_pipe.unet._tokencache.state.cache_bytes() == 0  # caches freed after the call


def test_exception_inside_a_call_leaves_pipeline_usable(sd_pipe):
    tc.apply(sd_pipe, tc.DaToConfig.preset("balanced"))
    expected = run_sd(sd_pipe, steps=6)

    def boom(pipe, i, t, kw):
        if i == 2:
            raise RuntimeError("interrupted")
        return kw

    with pytest.raises(RuntimeError, match="interrupted"):
        run_sd(sd_pipe, steps=6, callback_on_step_end=boom)
    assert torch.equal(run_sd(sd_pipe, steps=6), expected)


def test_batch_odd_and_no_cfg(sd_pipe):
    tc.apply(sd_pipe, tc.DaToConfig.preset("fast"))
    out = run_sd(sd_pipe, steps=6, num_images_per_prompt=3)
    assert out.shape[0] == 3 and torch.isfinite(out).all()
    out1 = run_sd(sd_pipe, steps=6, guidance=1.0, prompt=["a", "b", "c"])
    assert out1.shape[0] == 3 and torch.isfinite(out1).all()
    assert sd_pipe.unet._tokencache.state.last_cfg is False


def test_patch_size_not_dividing_grid_raises_and_pipeline_recovers(sd_pipe):
    tc.apply(sd_pipe, tc.DaToConfig(patch_size=3, prune_ratio=0.5))
    with pytest.raises(ValueError, match="patch_size=3 does not divide the 8x8 token grid"):
        run_sd(sd_pipe, steps=3)
    tc.remove(sd_pipe)
    tc.apply(sd_pipe, tc.DaToConfig(patch_size=2))
    assert torch.isfinite(run_sd(sd_pipe, steps=3)).all()


def test_bad_targets_and_double_apply(sd_pipe):
    with pytest.raises(TypeError, match="supported classes: .*UNet2DConditionModel"):
        tc.apply(torch.nn.Linear(2, 2), tc.DaToConfig())
    with pytest.raises(TypeError, match="not a tokencache config"):
        tc.apply(sd_pipe, {"method": "dato"})
    tc.apply(sd_pipe, tc.DaToConfig())
    with pytest.raises(ValueError, match="already applied"):
        tc.apply(sd_pipe, tc.ToMeConfig())
    tc.remove(sd_pipe)
    with pytest.raises(ValueError, match="depth 9 is invalid for this UNet; allowed: 1..6"):
        tc.apply(sd_pipe, tc.DaToConfig(cache_plan=["full", 9]))
    assert not tc.is_applied(sd_pipe)  # a failed apply leaves nothing behind
    with pytest.raises(ValueError, match="prune_levels value 5 is invalid"):
        tc.apply(sd_pipe, tc.DaToConfig(prune_levels=[5]))
    with pytest.raises(ValueError, match="nothing is applied"):
        tc.summary(sd_pipe)


def test_bare_unet_with_explicit_steps_and_bf16():
    unet = tiny_unet().to(torch.bfloat16)
    tc.apply(unet, tc.DaToConfig(cache_plan=["full", 1, "reuse"], prune_ratio=0.4), num_inference_steps=3, cfg=True)
    x = torch.randn(2, 4, 8, 8, dtype=torch.bfloat16)
    ctx = torch.randn(2, 5, 32, dtype=torch.bfloat16)
    outs = [unet(x, t, encoder_hidden_states=ctx).sample for t in (900, 500, 100)]
    assert all(torch.isfinite(o.float()).all() for o in outs) and torch.equal(outs[2], outs[1])
    assert tc.summary(unet).steps_total == 3


def test_img2img_counts_only_the_steps_it_runs(sd_components):
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(**sd_components)
    pipe.set_progress_bar_config(disable=True)
    tc.apply(pipe, tc.DaToConfig.preset("balanced"))
    try:
        img = torch.rand(1, 3, 16, 16)
        out = pipe("a cat", image=img, strength=0.5, num_inference_steps=10, output_type="latent",
                   generator=torch.Generator().manual_seed(0)).images
        assert torch.isfinite(out).all()
        s = tc.summary(pipe)
        assert s.steps_total == 5 and s.steps_full >= 1
    finally:
        tc.remove(pipe)


def test_controlnet_residuals_still_act_on_partial_steps(sd_components):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(sd_components["unet"], conditioning_embedding_out_channels=(8, 16))
    for p in controlnet.parameters():  # from_unet zero-inits the outputs; make residuals non-zero
        torch.nn.init.normal_(p, std=0.05)
    pipe = StableDiffusionControlNetPipeline(controlnet=controlnet, **sd_components)
    pipe.set_progress_bar_config(disable=True)
    cond = torch.rand(1, 3, 16, 16)
    tc.apply(pipe, tc.DeepCacheConfig(interval=10, branch=0))  # one full step, then partial steps
    try:
        outs = [
            pipe("a cat", image=cond, num_inference_steps=4, output_type="latent", controlnet_conditioning_scale=s,
                 generator=torch.Generator().manual_seed(0)).images
            for s in (0.0, 1.0)
        ]
        assert tc.summary(pipe).steps_partial == 3
        assert not torch.allclose(outs[0], outs[1])
        assert torch.isfinite(outs[1]).all()
    finally:
        tc.remove(pipe)


def test_sdxl_pipeline_prunes_its_first_attention_level(tmp_path):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    write_clip_tokenizer(tmp_path)
    tok = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=80, projection_dim=32)).eval()
    from conftest import tiny_vae

    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(), text_encoder=tiny_text_encoder(), text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
        unet=tiny_unet(sdxl=True), scheduler=EulerDiscreteScheduler(), force_zeros_for_empty_prompt=False)
    pipe.set_progress_bar_config(disable=True)

    def run():
        return pipe("a cat", num_inference_steps=5, height=16, width=16, output_type="latent",
                    generator=torch.Generator().manual_seed(0)).images

    base = run()
    tc.apply(pipe, tc.DaToConfig.preset("balanced"))
    out = run()
    handle = pipe.unet._tokencache
    names = set(handle.token_modules)  # level 1 is also this tiny UNet's lowest level, so the mid block joins
    assert names and all(n.startswith(("down_blocks.1.", "up_blocks.0.", "mid_block.")) for n in names)
    rec = handle.state.last_records[0]
    assert all(v == (16 - int(16 * 0.4), 16) for v in rec.partial.values())  # level 1 of an 8x8 latent: 4x4
    assert torch.isfinite(out).all()
    tc.remove(pipe)
    assert torch.equal(run(), base)


def test_local_checkpoint_saved_and_loaded_by_path(sd_components, tmp_path):
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline(**sd_components).save_pretrained(tmp_path / "ckpt")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "ckpt", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    base = run_sd(pipe, steps=4)
    tc.apply(pipe, tc.DaToConfig.preset("fast"))
    assert torch.isfinite(run_sd(pipe, steps=4)).all()
    tc.remove(pipe)
    assert torch.equal(run_sd(pipe, steps=4), base)


def test_custom_attention_processor_still_runs_on_kept_tokens(sd_pipe):
    from diffusers.models.attention_processor import AttnProcessor2_0

    seen = []

    class Recording(AttnProcessor2_0):
        def __call__(self, attn, hidden_states, *args, **kwargs):
            seen.append(hidden_states.shape[1])
            return super().__call__(attn, hidden_states, *args, **kwargs)

    attn1 = sd_pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    attn1.set_processor(Recording())
    try:
        tc.apply(sd_pipe, tc.ToMeConfig(ratio=0.5))
        run_sd(sd_pipe, steps=2)
        assert seen == [32, 32]  # 64 tokens, half pruned; the user's processor saw only kept tokens
    finally:
        attn1.set_processor(AttnProcessor2_0())
