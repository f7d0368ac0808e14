"""FLUX, SD3, Wan (2.1, 2.2) and Qwen-Image: tiny models inside the real diffusers pipeline classes.

The contract matrix (``test_contract.py``) covers every method on the bare transformers; this file
covers what only the pipelines do: per-context calls (FLUX ``true_cfg_scale``, Wan, Qwen-Image), SD3's
batched CFG and skip-layer-guidance calls, Wan 2.2's expert switch, img2img, non-square sizes, odd
batches, LoRA, the two text-stream policies and the errors for what a family cannot do.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model

import tokencache as tc
from mmdit_pipes import flux_pipe, qwen_pipe, sd3_pipe, wan_pipe
from mmdit_tiny import flux_inputs, tiny_flux, tiny_sd3, tiny_wan
from tokencache.config import CONFIG_CLASSES
from tokencache.core.schedule import StepAction

STEPS = 6
PROMPT = "a photo of a cat"


def _images(out):
    return out.frames if hasattr(out, "frames") else out.images


def _call(pipe, seed=0, **kw):
    pipe.set_progress_bar_config(disable=True)
    steps = kw.pop("steps", STEPS)
    return _images(pipe(PROMPT, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                        output_type="pt", **kw))


def _all_full(cfg):
    cfg = dataclasses.replace(cfg)
    object.__setattr__(cfg, "plan", lambda n: [StepAction("full") for _ in range(n)])
    return cfg


FLUX_KW = dict(height=32, width=48, max_sequence_length=16)  # a non-square token grid
CASES = {
    "flux": (flux_pipe, FLUX_KW, ("cond",)),  # the pipeline wraps even its single call in cache_context("cond")
    "flux-true-cfg": (flux_pipe, dict(height=32, width=32, max_sequence_length=16, negative_prompt="a dog",
                                      true_cfg_scale=2.0), ("cond", "uncond")),
    "sd3": (sd3_pipe, dict(height=32, width=24, max_sequence_length=16), None),
    "wan": (wan_pipe, dict(height=64, width=48, num_frames=5, negative_prompt="a dog", max_sequence_length=16),
            ("cond", "uncond")),
    # Wan 2.2 TI2V-5B: one timestep per token, so the blocks modulate every token with its own shift/scale/gate
    "wan22-ti2v": (lambda: wan_pipe(expand_timesteps=True), dict(height=64, width=48, num_frames=5,
                                                                  negative_prompt="a dog", max_sequence_length=16),
                   ("cond", "uncond")),
    "qwen-image": (qwen_pipe, dict(height=32, width=48, negative_prompt="a dog", true_cfg_scale=4.0),
                   ("cond", "uncond")),
}


@pytest.fixture(scope="module")
def pipes():
    return {}


def _pipe(pipes, name):
    if name not in pipes:
        pipes[name] = CASES[name][0]()
    return pipes[name]


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("method", ["toca", "duca", "fora"])
def test_pipeline_counts_steps_per_context_and_removes_cleanly(pipes, name, method):
    pipe, kw, contexts = _pipe(pipes, name), CASES[name][1], CASES[name][2]
    base = _call(pipe, **kw)
    cfg = CONFIG_CLASSES[method].preset("fast")
    tc.apply(pipe, _all_full(cfg))
    full = _call(pipe, **kw)
    tc.remove(pipe)
    torch.testing.assert_close(full, base, atol=1e-5, rtol=0)

    tc.apply(pipe, cfg)
    try:
        out = _call(pipe, **kw)
        s = tc.summary(pipe)
    finally:
        tc.remove(pipe)
    assert not out.isnan().any() and out.shape == base.shape
    per_context = len(contexts or ("default",))
    assert s.steps_total == STEPS * per_context
    assert set(s.contexts) == set(contexts or ("default",))
    assert all(c["steps_total"] == STEPS for c in s.contexts.values())
    assert s.steps_full == per_context * sum(a.kind == "full" for a in cfg.plan(STEPS))
    assert s.macs_ratio < 0.9
    assert torch.equal(_call(pipe, **kw), base)  # remove() is bit-identical


def test_per_context_caches_are_separate(pipes):
    """FLUX true CFG: the cond branch's outputs do not depend on whether uncond calls run in between."""
    pipe = _pipe(pipes, "flux-true-cfg")
    tc.apply(pipe, tc.FORAConfig.preset("fast"))
    try:
        _call(pipe, **CASES["flux-true-cfg"][1])
        st = pipe.transformer._tokencache.contexts
        cond, uncond = st.states["cond"], st.states["uncond"]
        assert cond.last_records and uncond.last_records and cond is not uncond
        assert cond.last_key == uncond.last_key  # same shapes, still separate states and counters
    finally:
        tc.remove(pipe)


def test_flux_img2img_counts_the_strength_cut_loop():
    pipe = flux_pipe(img2img=True)
    image = torch.rand(1, 3, 32, 32)
    tc.apply(pipe, tc.ToCaConfig.preset("fast"))
    try:
        out = _call(pipe, image=image, strength=0.5, steps=8, height=32, width=32, max_sequence_length=16)
        s = tc.summary(pipe)
    finally:
        tc.remove(pipe)
    assert not out.isnan().any()
    assert s.steps_total == 4


def test_sd3_skip_layer_guidance_calls_run_uncached_and_uncounted(pipes):
    pipe = _pipe(pipes, "sd3")
    kw = dict(height=32, width=32, max_sequence_length=16, skip_guidance_layers=[1], skip_layer_guidance_start=0.01,
              skip_layer_guidance_stop=0.9)
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda m, a, k: calls.append(k.get("skip_layers")),
                                                        with_kwargs=True)
    try:
        base = _call(pipe, **kw)
        tc.apply(pipe, _all_full(tc.ToCaConfig.preset("fast")))
        full = _call(pipe, **kw)
        tc.remove(pipe)
        tc.apply(pipe, tc.ToCaConfig.preset("fast"))
        out = _call(pipe, **kw)
        s = tc.summary(pipe)
        tc.remove(pipe)
    finally:
        handle.remove()
    assert sum(c is not None for c in calls) > 0  # the pipeline did make SLG calls
    torch.testing.assert_close(full, base, atol=1e-5, rtol=0)
    assert not out.isnan().any()
    assert s.steps_total == STEPS and set(s.contexts) == {"default"}


def test_sd3_batch_two_with_cfg_and_odd_batch(pipes):
    pipe = _pipe(pipes, "sd3")
    tc.apply(pipe, tc.DuCaConfig.preset("fast"))
    try:
        two = _call(pipe, height=32, width=24, max_sequence_length=16, num_images_per_prompt=2)
        three = _call(pipe, height=32, width=24, max_sequence_length=16, num_images_per_prompt=3)
        s = tc.summary(pipe)
    finally:
        tc.remove(pipe)
    assert two.shape[0] == 2 and three.shape[0] == 3 and not three.isnan().any()
    assert s.steps_total == STEPS


def test_flux_odd_batch_and_any_step_count(pipes):
    pipe = _pipe(pipes, "flux")
    tc.apply(pipe, tc.ToCaConfig.preset("balanced"))
    try:
        out = _call(pipe, steps=7, num_images_per_prompt=3, **FLUX_KW)
        s = tc.summary(pipe)
    finally:
        tc.remove(pipe)
    assert out.shape[0] == 3 and not out.isnan().any() and s.steps_total == 7


def test_wan22_two_experts_count_steps_across_the_switch_with_separate_caches():
    pipe = wan_pipe(two_experts=True)
    kw = dict(height=64, width=48, num_frames=5, negative_prompt="a dog", max_sequence_length=16)
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, a, i=i: seen.append(i)) for i, m in
             enumerate((pipe.transformer, pipe.transformer_2))]
    base = _call(pipe, **kw)
    switch = seen.index(1) // 2  # two calls per step (cond, uncond)
    assert 0 < switch < STEPS
    tc.apply(pipe, _all_full(tc.FORAConfig.preset("fast")))
    full = _call(pipe, **kw)
    tc.remove(pipe)
    torch.testing.assert_close(full, base, atol=1e-5, rtol=0)

    cfg = tc.FORAConfig(interval=STEPS)  # one full step at 0, then reuse: expert 2 must not reuse expert 1
    tc.apply(pipe, cfg)
    assert pipe.transformer_2._tokencache is pipe.transformer._tokencache
    out = _call(pipe, **kw)
    st = pipe.transformer._tokencache.contexts.states["cond"]
    records = st.last_records
    s = tc.summary(pipe)
    tc.remove(pipe)
    for h in hooks:
        h.remove()
    assert not out.isnan().any()
    assert s.steps_total == 2 * STEPS and len(records) == STEPS
    first2 = records[switch]  # the second expert's first step is planned "reuse-like" but has no caches yet
    assert first2.action.kind == "partial"
    assert first2.computed_full and all(n.startswith("transformer_2:") for n in first2.computed_full)
    assert not first2.skipped
    later = records[switch + 1] if switch + 1 < STEPS else None
    if later is not None:
        assert later.skipped and all(n.startswith("transformer_2:") for n in later.skipped)
    assert all(not n.startswith("transformer_2:") for r in records[:switch] for n in r.skipped + r.computed_full)
    assert not hasattr(pipe.transformer_2, "_tokencache") and not hasattr(pipe.transformer, "_tokencache")
    assert torch.equal(_call(pipe, **kw), base)


def test_wan22_experts_with_different_configs_are_refused():
    pipe = wan_pipe(two_experts=True)
    pipe.transformer_2 = tiny_wan(layers=3)
    with pytest.raises(ValueError, match="transformer_2"):
        tc.apply(pipe, tc.ToCaConfig())
    assert not hasattr(pipe.transformer, "_tokencache")


@pytest.mark.parametrize("name", ["flux", "sd3", "qwen-image"])
@pytest.mark.parametrize("forecast", ["none", "taylor"])
def test_the_text_stream_policy_never_changes_the_image(pipes, name, forecast):
    """The three ``ff_context`` policies: its own top-k of text tokens (the default, as the authors' FLUX code),
    reused whole, or all recomputed. On a ToCa partial step every joint attention comes from its approximator
    and the feed-forwards work token by token, so no text row reaches an image row before the next full step
    recomputes everything: the three give bit-identical images, and reusing the text stream whole costs the
    fewest MACs. The image stream's policy does change the image (the comparison can tell)."""
    pipe, kw = _pipe(pipes, name), CASES[name][1]
    base = dict(interval=3, fresh_ratio=0.3, forecast=forecast)

    def run(cfg):
        tc.apply(pipe, cfg)
        try:
            out = _call(pipe, **kw)
            s = tc.summary(pipe)
            return out, s.macs_ratio, s.tokens_computed_by_module["ff_context"]
        finally:
            tc.remove(pipe)

    own, own_macs, own_share = run(tc.ToCaConfig(**base))
    reused, reused_macs, reused_share = run(tc.ToCaConfig(**base, partial_modules=["attn2", "ff"]))
    weights = {**tc.ToCaConfig(**base).module_weights, "ff_context": 100.0}  # the image stream's unchanged
    every, every_macs, every_share = run(tc.ToCaConfig(**base, module_weights=weights))
    image_reused, _, _ = run(tc.ToCaConfig(**base, partial_modules=["attn2", "ff_context"]))
    assert torch.equal(reused, own) and torch.equal(every, own)
    assert reused_macs < own_macs < every_macs
    assert 0.0 < reused_share < own_share < every_share == pytest.approx(1.0)  # the text rows each policy computed
    assert not torch.equal(image_reused, own)


def test_flux_single_block_proj_out_recomputes_the_rows_proj_mlp_chose(monkeypatch):
    from tokencache.methods import token_cache

    chosen: dict[str, list] = {}
    orig = token_cache.TokenModuleHook.prepare

    def spy(self, st, call):
        orig(self, st, call)
        if self.now.mode == "partial":  # the tokens chosen for this step, before the call
            chosen.setdefault(self.name, []).append(self.now.idx.clone())

    monkeypatch.setattr(token_cache.TokenModuleHook, "prepare", spy)
    model = tiny_flux()
    tc.apply(model, tc.ToCaConfig(interval=3, fresh_ratio=0.3), num_inference_steps=STEPS, cfg=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i in range(STEPS):
            a, kw = flux_inputs(2, g)
            model(*a, timestep=torch.full((2,), 1.0 - i / STEPS), **kw)
    tc.remove(model)
    for b in range(2):
        mlp, out = chosen[f"single_transformer_blocks.{b}.proj_mlp"], chosen[f"single_transformer_blocks.{b}.proj_out"]
        assert len(mlp) == len(out) == 4
        assert all(torch.equal(x, y) for x, y in zip(mlp, out))


def test_lora_on_flux_single_block_linears_loaded_after_apply():
    """proj_mlp / proj_out are Linear layers that LoRA wraps: the token hooks follow them."""
    model = tiny_flux()
    g = torch.Generator().manual_seed(0)
    steps = [flux_inputs(2, g) for _ in range(STEPS)]

    def run():
        with torch.no_grad():
            return [model(*a, timestep=torch.full((2,), 1.0 - i / STEPS), **kw)[0] for i, (a, kw) in enumerate(steps)]

    cfg = tc.ToCaConfig(interval=3, fresh_ratio=0.3)
    tc.apply(model, cfg, num_inference_steps=STEPS, cfg=False)
    run()
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["proj_mlp", "proj_out", "to_q"],
                                       init_lora_weights=False), model)
    out = run()
    s = tc.summary(model)
    tc.remove(model)
    assert s.tokens_computed_by_module["ff_out"] < 1.0  # still cached after LoRA replaced the layers
    tc.apply(model, cfg, num_inference_steps=STEPS, cfg=False)
    ref = run()  # LoRA loaded before apply
    tc.remove(model)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "make, cfg, match",
    [
        (tiny_flux, tc.ToCaConfig(partial_modules=["attn1", "ff"]), "FluxTransformer2DModel: its 'attn1' modules"),
        (tiny_wan, tc.ToCaConfig(partial_modules=["attn1"]), "WanTransformer3DModel: its 'attn1' modules"),
        (tiny_sd3, tc.ToCaConfig(score="cross_entropy"), "SD3Transformer2DModel: its blocks have no cross-attention"),
    ],
    ids=["flux-joint-attn1", "wan-rope-attn1", "sd3-cross-entropy"],
)
def test_what_a_family_cannot_do_is_a_one_line_error(make, cfg, match):
    model = make()
    with pytest.raises(ValueError, match=match) as e:
        tc.apply(model, cfg)
    assert "\n" not in str(e.value)
    assert not any(hasattr(m, "_diffusers_hook") for m in model.modules())  # nothing left behind


def test_unsupported_block_class_names_the_class():
    model = tiny_flux()

    class CustomFluxBlock(torch.nn.Module):
        def forward(self, *a, **k):  # pragma: no cover - never called
            raise AssertionError

    model.single_transformer_blocks[0] = CustomFluxBlock()
    with pytest.raises(TypeError, match="single_transformer_blocks.0 is a CustomFluxBlock"):
        tc.apply(model, tc.FORAConfig())
