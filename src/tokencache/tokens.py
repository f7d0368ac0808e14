"""Token math as pure tensor functions: scores, patch-wise base selection, pruning, recovery.

Nothing here holds state or touches a module, so every function can be tested with exact values.
Token tensors are ``(B, N, C)`` with tokens in row-major order of an ``h x w`` grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diff_score(eps_prev: torch.Tensor, eps_prev2: torch.Tensor) -> torch.Tensor:
    """DaTo's DiffScore: ``|eps(k-1) - eps(k-2)|`` averaged over channels.

    Args:
        eps_prev: the last noise prediction, ``(B, C, H, W)``.
        eps_prev2: the one before, same shape.

    Returns:
        ``(B, H, W)`` float32 scores.
    """
    return (eps_prev.float() - eps_prev2.float()).abs().mean(dim=1)


def pool_to_grid(score: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Average-pool a ``(B, H, W)`` map to an ``h x w`` grid and flatten to ``(B, h*w)``."""
    if score.shape[-2:] != (h, w):
        score = F.adaptive_avg_pool2d(score.unsqueeze(1), (h, w)).squeeze(1)
    return score.reshape(score.shape[0], h * w)


def zscore(score: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalise each row of ``(B, N)`` to zero mean and unit standard deviation."""
    mean = score.mean(dim=1, keepdim=True)
    std = score.std(dim=1, keepdim=True, unbiased=False)
    return (score - mean) / (std + eps)


def check_grid(h: int, w: int, s: int) -> None:
    """Raise ``ValueError`` if the patch size ``s`` does not divide the ``h x w`` token grid."""
    if h % s or w % s:
        raise ValueError(
            f"patch_size={s} does not divide the {h}x{w} token grid; allowed: a patch size dividing both "
            f"{h} and {w}, or a resolution whose pruned level has sides divisible by {s}"
        )


def patch_argmax(score: torch.Tensor, h: int, w: int, s: int) -> torch.Tensor:
    """Index of the highest-scoring token in each ``s x s`` patch.

    Args:
        score: ``(B, h*w)`` scores.
        h, w: grid size; ``s`` must divide both.
        s: patch size.

    Returns:
        ``(B, h*w/s**2)`` flat token indices, patches in row-major order.

    Example:
        >>> patch_argmax(torch.arange(16.).view(1, 16), 4, 4, 2)
        tensor([[ 5,  7, 13, 15]])
    """
    check_grid(h, w, s)
    b = score.shape[0]
    patches = score.view(b, h // s, s, w // s, s).permute(0, 1, 3, 2, 4).reshape(b, -1, s * s)
    local = patches.argmax(dim=-1)  # (B, P) position inside the patch
    py = torch.arange(h // s, device=score.device).repeat_interleave(w // s)
    px = torch.arange(w // s, device=score.device).repeat(h // s)
    row = py * s + local // s
    col = px * s + local % s
    return row * w + col


def select_pruned(
    x: torch.Tensor, base: torch.Tensor, num_prune: int, recovery: str = "base"
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Choose which tokens to prune and where each pruned token copies its output from.

    Pruned tokens are the ``num_prune`` non-base tokens most cosine-similar to their nearest base token.
    The similarity is ``N_nonbase x N_base``, never ``N x N``.

    Args:
        x: ``(B, N, C)`` token features used for similarity.
        base: ``(B, P)`` base token indices (always kept).
        num_prune: number of tokens to prune per sample (``< N - P``... at most ``N - P``).
        recovery: ``"base"`` copies from the nearest base token; ``"kept"`` from the nearest kept token.

    Returns:
        ``kept`` ``(B, N - num_prune)`` token indices, base tokens first; ``src`` ``(B, N)`` index into
        ``kept`` that every token takes its output from; and the multiply-accumulates spent on
        similarity products (as flop_counter counts a matmul).
    """
    bsz, n, c = x.shape
    p = base.shape[1]
    if not 0 <= num_prune <= n - p:
        raise ValueError(f"num_prune={num_prune} is invalid; allowed: 0..{n - p} for {n} tokens and {p} base tokens")
    xn = F.normalize(x.float(), dim=-1)
    is_base = torch.zeros(bsz, n, dtype=torch.bool, device=x.device)
    is_base.scatter_(1, base, True)
    # Non-base indices in ascending order (a stable sort puts the False entries first).
    nonbase = torch.sort(is_base.to(torch.uint8), dim=1, stable=True).indices[:, : n - p]
    x_base = torch.gather(xn, 1, base.unsqueeze(-1).expand(-1, -1, c))
    x_non = torch.gather(xn, 1, nonbase.unsqueeze(-1).expand(-1, -1, c))
    sim = x_non @ x_base.transpose(1, 2)  # (B, N-P, P)
    macs = float(bsz * (n - p) * p * c)
    best, nearest = sim.max(dim=-1)
    order = best.argsort(dim=1, descending=True, stable=True)
    pruned_local, kept_local = order[:, :num_prune], order[:, num_prune:]
    pruned = torch.gather(nonbase, 1, pruned_local)
    kept = torch.cat([base, torch.gather(nonbase, 1, kept_local)], dim=1)
    src = torch.empty(bsz, n, dtype=torch.long, device=x.device)
    src.scatter_(1, kept, torch.arange(kept.shape[1], device=x.device).expand(bsz, -1))
    if num_prune:
        if recovery == "base":
            from_ = torch.gather(nearest, 1, pruned_local)  # base list positions == kept positions 0..P-1
        elif recovery == "kept":
            x_pruned = torch.gather(xn, 1, pruned.unsqueeze(-1).expand(-1, -1, c))
            x_kept = torch.gather(xn, 1, kept.unsqueeze(-1).expand(-1, -1, c))
            from_ = (x_pruned @ x_kept.transpose(1, 2)).argmax(dim=-1)
            macs += float(bsz * num_prune * kept.shape[1] * c)
        else:
            raise ValueError(f"recovery={recovery!r} is invalid; allowed: 'base', 'kept'")
        src.scatter_(1, pruned, from_)
    return kept, src, macs


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` (``(B, K)``) of ``x`` (``(B, N, C)``) -> ``(B, K, C)``."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(cache: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Write ``rows`` (``(B, K, C)``) into ``cache`` (``(B, N, C)``) at ``idx`` in place; returns cache."""
    return cache.scatter_(1, idx.unsqueeze(-1).expand(-1, -1, cache.shape[-1]), rows.to(cache.dtype))
