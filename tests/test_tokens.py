"""Exact-value tests of the pure token math (DaTo scoring, base selection, pruning, recovery)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokencache.core import tokens as T


def test_diff_score_is_channel_mean_of_abs_difference():
    a = torch.zeros(1, 2, 2, 2)
    b = torch.tensor([[[[1.0, -2.0], [0.0, 4.0]], [[3.0, 0.0], [0.0, -4.0]]]])
    assert torch.equal(T.diff_score(a, b), torch.tensor([[[2.0, 1.0], [0.0, 4.0]]]))


def test_pool_to_grid_averages_blocks():
    s = torch.arange(16.0).view(1, 4, 4)
    assert torch.allclose(T.pool_to_grid(s, 2, 2), torch.tensor([[2.5, 4.5, 10.5, 12.5]]))
    assert T.pool_to_grid(s, 4, 4).shape == (1, 16)


def test_zscore_rows():
    z = T.zscore(torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.allclose(z, torch.tensor([[-1.2247, 0.0, 1.2247]]), atol=1e-3)


def test_patch_argmax_exact_indices_square_and_nonsquare():
    assert T.patch_argmax(torch.arange(16.0).view(1, 16), 4, 4, 2).tolist() == [[5, 7, 13, 15]]
    score = torch.zeros(1, 2 * 4)
    score[0, 4] = 1.0  # row 1, col 0 -> patch 0 of a 2x4 grid
    score[0, 3] = 1.0  # row 0, col 3 -> patch 1
    assert T.patch_argmax(score, 2, 4, 2).tolist() == [[4, 3]]


def test_patch_size_must_divide_grid():
    with pytest.raises(ValueError, match="patch_size=3 does not divide the 4x4"):
        T.patch_argmax(torch.zeros(1, 16), 4, 4, 3)


def _features():
    # 4 tokens (a 2x2 grid, one patch) in 2-D: token 0 is the base; token 1 is identical to it,
    # token 2 is 45 degrees away, token 3 is orthogonal.
    x = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    return x, torch.tensor([[0]])


def test_select_pruned_prunes_most_similar_and_copies_from_base():
    x, base = _features()
    kept, src, macs = T.select_pruned(x, base, num_prune=2)
    assert kept.tolist() == [[0, 3]]  # base first, then the least similar non-base token
    assert src.tolist() == [[0, 0, 0, 1]]  # pruned tokens 1 and 2 copy base token 0 (kept position 0)
    assert macs == 1 * 3 * 1 * 2  # (N - P) x P x C similarity product, never N x N


def test_select_pruned_kept_recovery_uses_nearest_kept_token():
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [0.7, 0.7]]])
    kept, src, _ = T.select_pruned(x, torch.tensor([[0]]), num_prune=1, recovery="kept")
    # token 3 is most similar to base 0 and pruned; among kept {0, 1, 2} it is nearest to... token 0 or 2
    assert kept[0, 0] == 0 and 3 not in kept[0].tolist()
    nearest_kept = kept[0, src[0, 3]].item()
    sims = {k: torch.cosine_similarity(x[0, 3], x[0, k], dim=0).item() for k in kept[0].tolist()}
    assert nearest_kept == max(sims, key=sims.get)


def test_select_pruned_rejects_too_many():
    x, base = _features()
    with pytest.raises(ValueError, match="num_prune=4"):
        T.select_pruned(x, base, num_prune=4)


def test_gather_then_src_gather_recovers_kept_rows_exactly():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8)
    base = T.patch_argmax(torch.randn(2, 16), 4, 4, 2)
    kept, src, _ = T.select_pruned(x, base, num_prune=6)
    y = T.gather_tokens(T.gather_tokens(x, kept), src)
    for b in range(2):
        for tok in kept[b].tolist():
            assert torch.equal(y[b, tok], x[b, tok])
        assert set(base[b].tolist()) <= set(kept[b].tolist())
    assert kept.shape == (2, 10)


def test_scatter_tokens_in_place():
    cache = torch.zeros(1, 4, 2)
    T.scatter_tokens(cache, torch.tensor([[2, 0]]), torch.tensor([[[1.0, 1.0], [2.0, 2.0]]]))
    assert cache[0, :, 0].tolist() == [2.0, 0.0, 1.0, 0.0]


# ---- cell layouts: the few-launch spatial bonus and patch argmax, against plain loops ----------------


def _cells_by_loops(h: int, w: int, g: int) -> list[list[int]]:
    """Token indices of each ``g x g`` cell (row-major cells, row-major inside; cropped at the edges)."""
    return [[y * w + x for y in range(cy, min(cy + g, h)) for x in range(cx, min(cx + g, w))]
            for cy in range(0, h, g) for cx in range(0, w, g)]


def _bonus_by_loops(score: torch.Tensor, h: int, w: int, g: int, bonus: float) -> torch.Tensor:
    out = score.clone()
    for b in range(score.shape[0]):
        top = score[b].abs().max()
        for cell in _cells_by_loops(h, w, g):
            best = max(cell, key=lambda t: (score[b, t].item(), -t))  # first of equal maxima in cell order
            out[b, best] += bonus * top
    return out


@given(h=st.integers(1, 9), w=st.integers(1, 9), g=st.integers(2, 4), levels=st.integers(1, 4), seed=st.integers(0, 99))
@settings(max_examples=60, deadline=None)
def test_spatial_bonus_and_patch_argmax_equal_plain_loops(h, w, g, levels, seed):
    """Any grid, dividing or not, with ties (few score levels): the bonus and winners of the loops, exactly."""
    gen = torch.Generator().manual_seed(seed)
    score = torch.randint(-levels, levels + 1, (2, h * w), generator=gen).float() / 3
    layout = T.cell_layout(h, w, g)
    assert [[t for t in row if t < h * w] for row in layout.tolist()] == _cells_by_loops(h, w, g)
    expected = _bonus_by_loops(score, h, w, g, 0.6)
    assert torch.equal(T.spatial_bonus(score, h, w, g, 0.6), expected)
    assert torch.equal(T.spatial_bonus(score, h, w, g, 0.6, layout), expected)
    if h % g == 0 and w % g == 0:
        winners = [[max(c, key=lambda t: (score[b, t].item(), -t)) for c in _cells_by_loops(h, w, g)] for b in range(2)]
        assert T.patch_argmax(score, h, w, g, layout).tolist() == winners


def test_spatial_bonus_and_patch_argmax_launch_the_same_few_kernels_at_every_size():
    """They run in every partial block of every step: a fixed, small number of launches, whatever the grid."""
    from tokencache.harness.launches import LaunchCounter

    for h, w, g in ((4, 4, 2), (64, 64, 2), (6, 9, 4)):
        score, layout = torch.randn(2, h * w), T.cell_layout(h, w, g)
        with LaunchCounter() as c:
            T.spatial_bonus(score, h, w, g, 0.6, layout)
        assert c.total == (6 if h % g == 0 and w % g == 0 else 8), dict(c.ops)  # a cropped grid adds a -inf column
        if h % g == 0 and w % g == 0:
            with LaunchCounter() as c:
                T.patch_argmax(score, h, w, g, layout)
            assert c.total == 3, dict(c.ops)  # index the cells, argmax, gather the winners
