"""Norms read only by token-level modules (``ModelAdapter.input_norms``) return one token when those all skip,
and only the computed tokens when those compute a subset: same outputs, less work."""

from __future__ import annotations

import pytest
import torch

import tokencache as tc
from test_dit import make_dit_pipe, make_pixart_pipe, run_dit, run_pixart, tiny_dit, tiny_pixart
from tokencache.core.tokens import fresh_count
from tokencache.models import ModelAdapter, find_adapter


@pytest.fixture(scope="module")
def dit_pipe():
    return make_dit_pipe()


@pytest.fixture(scope="module")
def pixart_pipe():
    return make_pixart_pipe()


def _widths(module: torch.nn.Module) -> list[int]:
    """Token counts of ``module``'s outputs, one per call (a forward hook sees the hooked forward's output)."""
    seen: list[int] = []
    module.register_forward_hook(lambda m, a, out: seen.append(out.shape[1]))
    return seen


CONFIGS = [
    tc.FORAConfig(interval=3),
    tc.FORAConfig(interval=3, forecast="taylor"),
    tc.ToCaConfig.preset("fast"),
    tc.DuCaConfig.preset("balanced"),
    tc.ToCaConfig(interval=3, partial_modules=["attn1", "ff"], score="attention"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.method}-{c.forecast}")
@pytest.mark.parametrize("family", ["dit", "pixart"])
def test_outputs_are_bit_identical_with_and_without_the_stubs(family, cfg, dit_pipe, pixart_pipe, monkeypatch):
    pipe, run = (dit_pipe, run_dit) if family == "dit" else (pixart_pipe, run_pixart)
    tc.apply(pipe, cfg)
    try:
        stubbed = run(pipe, steps=8)
    finally:
        tc.remove(pipe)
    monkeypatch.setattr(ModelAdapter, "norms_of", lambda self, block: {})
    tc.apply(pipe, cfg)
    try:
        plain = run(pipe, steps=8)
    finally:
        tc.remove(pipe)
    assert torch.equal(torch.as_tensor(stubbed), torch.as_tensor(plain))


def test_dit_norms_return_one_token_exactly_on_skipped_steps(dit_pipe):
    block = dit_pipe.transformer.transformer_blocks[1]
    attn_norm, ff_norm = _widths(block.norm1.norm), _widths(block.norm3)
    base = run_dit(dit_pipe, steps=6)
    assert attn_norm == ff_norm == [16] * 6  # 4x4 tokens, every step
    attn_norm.clear()
    ff_norm.clear()
    tc.apply(dit_pipe, tc.FORAConfig(interval=3))  # full at steps 0 and 3
    out = run_dit(dit_pipe, steps=6)
    assert attn_norm == ff_norm == [16, 1, 1, 16, 1, 1]
    tc.remove(dit_pipe)
    attn_norm.clear()
    assert torch.equal(torch.as_tensor(run_dit(dit_pipe, steps=6)), torch.as_tensor(base))
    assert attn_norm == [16] * 6  # removed with the other hooks
    assert not torch.equal(torch.as_tensor(out), torch.as_tensor(base))


def test_partial_steps_normalise_only_the_tokens_they_compute(pixart_pipe, monkeypatch):
    block = pixart_pipe.transformer.transformer_blocks[0]
    attn_norm, ff_norm = _widths(block.norm1), _widths(block.norm2)
    # ToCa: attn1 comes from its cache on partial steps, ff recomputes k tokens: its norm sees only those
    tc.apply(pixart_pipe, tc.ToCaConfig(interval=3, fresh_ratio=0.5, partial_modules=["ff"]))
    try:
        out = run_pixart(pixart_pipe, steps=6)
    finally:
        tc.remove(pixart_pipe)
    n = 4 * 6  # a 16x24 image: an 8x12 latent, patch 2
    k = fresh_count(0.5 * 1.6, n)  # ff's module weight in the default config
    assert 1 < k < n
    assert attn_norm == [n, 1, 1, n, 1, 1]
    assert ff_norm == [n, k, k, n, k, k]
    # the same rows as gathering after the norm: bit-identical to the hooks without the norm hook
    monkeypatch.setattr(ModelAdapter, "norms_of", lambda self, block: {})
    tc.apply(pixart_pipe, tc.ToCaConfig(interval=3, fresh_ratio=0.5, partial_modules=["ff"]))
    try:
        ref = run_pixart(pixart_pipe, steps=6)
    finally:
        tc.remove(pixart_pipe)
    assert torch.equal(torch.as_tensor(out), torch.as_tensor(ref))


def test_adapter_declares_the_norms_per_norm_type():
    dit, pixart = tiny_dit(), tiny_pixart()
    adapter = find_adapter(dit)
    assert adapter.norms_of(dit.transformer_blocks[0]) == {
        "attn1": [dit.transformer_blocks[0].norm1.norm], "ff": [dit.transformer_blocks[0].norm3],
    }
    assert adapter.norms_of(pixart.transformer_blocks[0]) == {
        "attn1": [pixart.transformer_blocks[0].norm1], "ff": [pixart.transformer_blocks[0].norm2],
    }
    pixart.transformer_blocks[0].set_chunk_feed_forward(2, dim=1)  # ff runs per chunk of its input: its norm stays
    assert set(adapter.norms_of(pixart.transformer_blocks[0])) == {"attn1"}


def test_sd3_norms_shared_by_both_attentions_are_declared_under_each():
    from mmdit_tiny import tiny_sd3

    net = tiny_sd3()  # block 0 has SD3.5's dual attention; the last block is context_pre_only
    adapter = find_adapter(net)
    dual, plain, last = net.transformer_blocks
    assert adapter.norms_of(dual) == {
        "attn1": [dual.norm1.norm, dual.norm1_context.norm], "attn_dual": [dual.norm1.norm],
        "ff": [dual.norm2], "ff_context": [dual.norm2_context],
    }
    assert set(adapter.norms_of(plain)) == {"attn1", "ff", "ff_context"}
    assert set(adapter.norms_of(last)) == {"attn1", "ff"}  # no text feed-forward in the last block
    plain.set_chunk_feed_forward(2, dim=1)
    assert set(adapter.norms_of(plain)) == {"attn1"}


def test_a_norm_is_stubbed_only_when_every_reader_skips_and_gathered_only_when_the_rest_compute(dit_pipe, monkeypatch):
    block = dit_pipe.transformer.transformer_blocks[1]
    shared, lonely = _widths(block.norm1.norm), _widths(block.norm3)
    # norm1.norm read by attn1 and ff (ff computes on ToCa's partial steps); norm3 by attn1 and a role never hooked
    monkeypatch.setattr(ModelAdapter, "norms_of", lambda self, blk: {
        "attn1": [blk.norm1.norm, blk.norm3], "ff": [blk.norm1.norm], "unhooked": [blk.norm3]})
    tc.apply(dit_pipe, tc.ToCaConfig(interval=3, first_full_steps=1))  # full at 0 and 3: attn1 skips, ff partial
    try:
        run_dit(dit_pipe, steps=6)
    finally:
        tc.remove(dit_pipe)
    cfg = tc.ToCaConfig()
    k = fresh_count(cfg.fresh_ratio * cfg.module_weights["ff"], 16)
    assert 1 < k < 16
    assert shared == [16, k, k, 16, k, k]  # not stubbed: ff computes k tokens, so the norm gives those
    assert lonely == [16] * 6
    shared.clear()
    tc.apply(dit_pipe, tc.FORAConfig(interval=3))  # attn1 and ff both skip at steps 1, 2, 4, 5
    try:
        run_dit(dit_pipe, steps=6)
    finally:
        tc.remove(dit_pipe)
    assert shared == [16, 1, 1, 16, 1, 1]
    assert lonely == [16] * 12  # one reader is never hooked: always every token


@pytest.mark.parametrize("name", ["flux", "sd3", "wan", "wan22-ti2v", "qwen-image"])
@pytest.mark.parametrize("method", ["toca", "duca", "fora"])
def test_mmdit_and_video_families_are_bit_identical_and_stub_their_norms(name, method, monkeypatch):
    from test_mmdit import CASES, _call

    make, kw, _ = CASES[name]
    pipe = make()
    net = pipe.transformer
    block = net.blocks[0] if name.startswith("wan") else net.transformer_blocks[0]
    norm = {"flux": lambda: block.norm1.norm, "sd3": lambda: block.norm1.norm,  # sd3: a dual-attention block
            "qwen-image": lambda: block.img_norm1}.get(name, lambda: block.norm1)
    seen = _widths(norm())
    ff_norm = {"flux": lambda: block.norm2, "sd3": lambda: block.norm2, "qwen-image": lambda: block.img_norm2}.get(
        name, lambda: block.norm3)
    ff_seen = _widths(ff_norm())
    single = _widths(net.single_transformer_blocks[0].norm.norm) if name == "flux" else None
    cfg = tc.config.CONFIG_CLASSES[method].preset("fast")
    tc.apply(pipe, cfg)
    try:
        stubbed = _call(pipe, **kw)
    finally:
        tc.remove(pipe)
    assert 1 in seen and max(seen) > 1  # one token on the steps attention came from its cache, all on others
    # partial steps (ToCa, DuCa's conservative ones) normalise only the k tokens ff computes; Wan 2.2 TI2V
    # modulates each token alone, so its norms always see every token there
    narrowed = [w for w in ff_seen if 1 < w < max(ff_seen)]
    assert bool(narrowed) == (method != "fora" and name != "wan22-ti2v")
    if single is not None:  # FLUX single blocks: attention and proj_mlp share the norm; ToCa computes proj_mlp
        assert (1 in single) == (method == "fora") and max(single) > 1
    with monkeypatch.context() as m:
        m.setattr(ModelAdapter, "norms_of", lambda self, block: {})
        tc.apply(pipe, cfg)
        try:
            plain = _call(pipe, **kw)
        finally:
            tc.remove(pipe)
    assert torch.equal(stubbed, plain)


FLUX_SINGLE_CONFIGS = [
    tc.ToCaConfig.preset("fast"),  # Taylor 1, per-row anchors on proj_mlp / proj_out
    tc.ToCaConfig(interval=3, fresh_ratio=0.3),  # reuse: fresh rows scattered into the cache in place
    tc.DuCaConfig.preset("balanced"),
    tc.FORAConfig(interval=3),
    tc.FORAConfig(interval=3, forecast="foca"),  # a forecast whose predict rolls state
]


@pytest.mark.parametrize("cfg", FLUX_SINGLE_CONFIGS, ids=lambda c: f"{c.method}-{c.forecast}")
def test_flux_single_blocks_produce_only_the_rows_proj_out_reads(cfg, monkeypatch):
    """Only ``proj_out`` reads a single block's attention and ``proj_mlp`` outputs: on a partial step they give its
    ``k`` rows (the activation and concatenation run on those), on a skipped step one row; outputs are the same."""
    from mmdit_pipes import flux_pipe
    from test_mmdit import FLUX_KW, _call

    pipe = flux_pipe()
    block = pipe.transformer.single_transformer_blocks[0]
    act, out_in = _widths(block.act_mlp), []
    block.proj_out.register_forward_pre_hook(lambda m, a: out_in.append(a[0].shape[1]))
    tc.apply(pipe, cfg)
    try:
        narrow = _call(pipe, **FLUX_KW)
    finally:
        tc.remove(pipe)
    n = max(act)
    assert n > 1 and act.count(n) < len(act)  # every token on full steps only
    partial = [w for w in act if 1 < w < n]
    assert bool(partial) == (cfg.method != "fora")
    assert (1 in act) == (cfg.method == "fora")  # ToCa/DuCa compute proj_mlp rows on every partial step
    assert out_in == act  # proj_out's input is those rows (on the 1-row steps it returns its forecast)
    with monkeypatch.context() as m:
        m.setattr(ModelAdapter, "sole_readers_of", lambda self, block: {})
        act.clear()
        tc.apply(pipe, cfg)
        try:
            plain = _call(pipe, **FLUX_KW)
        finally:
            tc.remove(pipe)
        assert set(act) == {n}  # without the declaration every row is forecast and activated
    assert torch.equal(narrow, plain)


def test_flux_single_blocks_plan_each_step_once_per_reader(monkeypatch):
    """``proj_out``'s plan (``narrowed``) is asked by each of its feeders' prepares and its own; it is evaluated
    once per step and reader, the other asks read the memo."""
    from mmdit_pipes import flux_pipe
    from test_mmdit import FLUX_KW, _call
    from tokencache.methods.token_cache import TokenModuleHook

    asks: dict[tuple[int, int], list] = {}
    evaluated: dict[tuple[int, int], int] = {}
    original = TokenModuleHook.narrowed

    def spy(self, st):
        key = (id(self), id(st.record))
        asks.setdefault(key, [self, st.record, 0])[2] += 1  # holds the record: its id stays unique
        memo = self._narrowed_memo
        if self.feeder_hooks and (memo is None or memo[0] is not st.record):
            evaluated[key] = evaluated.get(key, 0) + 1
        return original(self, st)

    monkeypatch.setattr(TokenModuleHook, "narrowed", spy)
    pipe = flux_pipe()
    tc.apply(pipe, tc.ToCaConfig.preset("fast"))
    try:
        _call(pipe, **FLUX_KW)
    finally:
        tc.remove(pipe)
    assert evaluated and set(evaluated.values()) == {1}
    assert all(asks[key][2] >= 2 for key in evaluated)  # asked again by a feeder: the memo answered
