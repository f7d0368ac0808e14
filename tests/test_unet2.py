"""Tier-2 UNet specifics (`unet2`: top attention level of 1024 tokens): DaTo prunes that level, and DaTo without
pruning is DeepCache-like (the scale study's controlled pair). The families' shared tests are in
`test_tier2_prompted.py`."""

import pytest
import torch

import tokencache as tc
from tokencache import zoo

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pipe():
    return zoo.load("unet2")


def test_dato_prunes_the_1024_token_level(pipe):
    """Pruning alone (every step full) cuts MACs only through the top level's self-attention."""
    cfg = tc.DaToConfig(cache_plan=["full"] * 4, prune_ratio=0.6)
    tc.apply(pipe, cfg)
    try:
        zoo.sample("unet2", pipe, [2], seed=0, num_inference_steps=4, guidance_scale=3.0)
        ratio = tc.summary(pipe).macs_ratio
    finally:
        tc.remove(pipe)
    assert 0.5 < ratio < 0.98


def test_dato_without_pruning_is_deepcache_like(pipe):
    """The scale study's controlled pair: DaTo on DeepCache-like's schedule with r=0 is DeepCache-like, bit for
    bit and MAC for MAC, so DaTo (reuse) N=k minus DeepCache-like N=k is the pruning alone."""
    out = {}
    for name, cfg in (("deepcache", tc.DeepCacheConfig(interval=3, branch=0)),
                      ("dato", tc.DaToConfig(cache_plan=["full" if i % 3 == 0 else 1 for i in range(6)],
                                             prune_ratio=0.0, forecast="none"))):
        tc.apply(pipe, cfg)
        try:
            out[name] = (zoo.sample("unet2", pipe, [4], seed=0, num_inference_steps=6), tc.summary(pipe).macs_ratio)
        finally:
            tc.remove(pipe)
    torch.testing.assert_close(out["dato"][0], out["deepcache"][0], rtol=0, atol=0)
    assert out["dato"][1] == out["deepcache"][1] < 0.7
