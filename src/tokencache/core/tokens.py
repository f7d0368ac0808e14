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


def cell_layout(h: int, w: int, grid: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Flat token index of every position of every ``grid x grid`` cell of an ``h x w`` grid.

    Cells are in row-major order, positions inside a cell too. Cells at the right and bottom edges are
    cropped when ``grid`` does not divide ``h`` or ``w``: their missing positions hold ``h * w``, one past
    the last token (:func:`spatial_bonus` points it at a ``-inf`` score). It depends on the grid only, so a
    caller computes it once per call, not once per block and step.

    Returns:
        ``(cells, grid * grid)`` int64 indices.

    Example:
        >>> cell_layout(2, 3, 2)  # cells {0, 1, 3, 4} and {2, 5} (cropped)
        tensor([[0, 1, 3, 4],
                [2, 6, 5, 6]])
    """
    if grid < 1:
        raise ValueError(f"grid={grid} is invalid; allowed: a cell size >= 1")
    hp, wp = -(-h // grid) * grid, -(-w // grid) * grid
    pos = torch.full((hp, wp), h * w, dtype=torch.long)
    pos[:h, :w] = torch.arange(h * w).view(h, w)
    return pos.view(hp // grid, grid, wp // grid, grid).permute(0, 2, 1, 3).reshape(-1, grid * grid).to(device)


def cell_argmax(score: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """Token index of the highest score in each cell of ``layout`` (ties: the first in the cell's order).

    Three tensor operations whatever the grid (an index, an argmax, a gather), so it costs the same few
    kernel launches at every size.

    Args:
        score: ``(B, N)`` scores; ``layout`` may point one past the last token only if ``score`` has a
            ``-inf`` column there.
        layout: ``(cells, positions)`` flat token indices (:func:`cell_layout`).

    Returns:
        ``(B, cells)`` token indices.
    """
    local = score[:, layout].argmax(dim=-1, keepdim=True)  # (B, cells, 1): the winner's position in its cell
    return layout.expand(score.shape[0], -1, -1).gather(2, local).squeeze(2)


def patch_argmax(score: torch.Tensor, h: int, w: int, s: int, layout: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the highest-scoring token in each ``s x s`` patch.

    Args:
        score: ``(B, h*w)`` scores.
        h, w: grid size; ``s`` must divide both.
        s: patch size.
        layout: :func:`cell_layout` ``(h, w, s)`` on ``score``'s device, if the caller keeps one.

    Returns:
        ``(B, h*w/s**2)`` flat token indices, patches in row-major order.

    Example:
        >>> patch_argmax(torch.arange(16.).view(1, 16), 4, 4, 2)
        tensor([[ 5,  7, 13, 15]])
    """
    check_grid(h, w, s)
    return cell_argmax(score, cell_layout(h, w, s, score.device) if layout is None else layout)


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


def row_index(idx: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``idx`` ``(B, K)`` expanded (a view) to gather or scatter ``K`` rows of ``like`` ``(B, *, *rest)`` on dim 1."""
    return idx.view(*idx.shape, *([1] * (like.dim() - 2))).expand(*idx.shape, *like.shape[2:])


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` (``(B, K)``) of ``x`` (``(B, N, ...)``) -> ``(B, K, ...)``."""
    return torch.gather(x, 1, row_index(idx, x))


def scatter_tokens(cache: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Write ``rows`` (``(B, K, ...)``) into ``cache`` (``(B, N, ...)``) at ``idx`` in place; returns cache."""
    return cache.scatter_(1, row_index(idx, rows), rows.to(cache.dtype))


# ================================================================================================
# ToCa / DuCa token scores and fresh-token selection (transformer methods)
# ================================================================================================


def l2_normalize(score: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each row of ``(B, N)`` by its L2 norm (the authors' normalisation of every score)."""
    score = score.float()
    return score / score.norm(dim=1, keepdim=True).clamp_min(eps)


def vnorm_score(v: torch.Tensor, heads: int) -> torch.Tensor:
    """DuCa's V-norm score: ``L2norm_j(sum_h (1 - ||v_{h,j}||))``; small value vectors score high.

    Args:
        v: ``(B, N, heads * d)`` self-attention values (the ``to_v`` output).
        heads: number of attention heads.

    Returns:
        ``(B, N)`` float32 scores.

    Example:
        >>> vnorm_score(torch.tensor([[[3.0, 4.0], [0.0, 0.0]]]), 1)  # norms 5 and 0
        tensor([[-0.9701,  0.2425]])
    """
    b, n, c = v.shape
    norms = v.float().reshape(b, n, heads, c // heads).norm(dim=-1)  # (B, N, H)
    return l2_normalize((1.0 - norms).sum(dim=-1))


def _head_split(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.float().reshape(b, n, heads, c // heads).transpose(1, 2)  # (B, H, N, d)


def attention_received_score(q: torch.Tensor, k: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """ToCa's self-attention influence s1: attention each token *receives*, head-averaged, L2-normalised.

    ``A = mean_h softmax(q_h k_h^T * scale)``; ``s1_j = sum_i A_ij``. Computed one head at a time so only
    one ``N x N`` map exists at once.

    Args:
        q, k: ``(B, N, heads * d)`` query and key projections.
        heads: number of heads.
        scale: the softmax scale (``d ** -0.5``).

    Returns:
        ``(B, N)`` float32 scores.
    """
    qh, kh = _head_split(q, heads), _head_split(k, heads)
    total = torch.zeros(q.shape[0], k.shape[1], dtype=torch.float32, device=q.device)
    for h in range(heads):
        total += torch.softmax(qh[:, h] @ kh[:, h].transpose(1, 2) * scale, dim=-1).sum(dim=1)
    return l2_normalize(total / heads)


def cross_attention_entropy(
    q: torch.Tensor, k: torch.Tensor, heads: int, scale: float, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Entropy ``H_i = -sum_k C_ik log(C_ik + 1e-7)`` of each row of the head-averaged cross-attention map.

    Args:
        q: ``(B, N, heads * d)`` image-token queries.
        k: ``(B, L, heads * d)`` text-token keys.
        heads: number of heads.
        scale: softmax scale.
        bias: optional additive mask ``(B, 1, L)`` or ``(B, L)`` (0 keep, large negative drop).

    Returns:
        ``(B, N)`` float32 entropies (not normalised; see :func:`entropy_score`).
    """
    qh, kh = _head_split(q, heads), _head_split(k, heads)
    logits = qh @ kh.transpose(-1, -2) * scale  # (B, H, N, L)
    if bias is not None:
        bias = bias.float()
        logits = logits + (bias.unsqueeze(1) if bias.ndim == 3 else bias[:, None, None, :])
    c = torch.softmax(logits, dim=-1).mean(dim=1)  # (B, N, L)
    return -(c * torch.log(c + 1e-7)).sum(dim=-1)


def entropy_score(entropy: torch.Tensor) -> torch.Tensor:
    """ToCa's s2 from per-token cross-attention entropies: ``L2norm(1 + H)``."""
    return l2_normalize(1.0 + entropy)


def share_cfg_halves(score: torch.Tensor) -> torch.Tensor:
    """Average the two halves of a ``[uncond; cond]`` batch of scores ``(2B, N)`` and repeat the mean."""
    half = score.shape[0] // 2
    mean = 0.5 * (score[:half] + score[half:])
    return torch.cat([mean, mean], dim=0)


def staleness_term(counts: torch.Tensor, weight: float, norm: int) -> torch.Tensor:
    """ToCa's s3: ``weight * c / norm`` for tokens skipped ``c`` steps in a row."""
    return counts.float() * (weight / max(norm, 1))


def spatial_bonus(
    score: torch.Tensor, h: int, w: int, grid: int, bonus: float, layout: torch.Tensor | None = None
) -> torch.Tensor:
    """ToCa's s4: the best token of each ``grid x grid`` cell of an ``h x w`` grid gets ``+ bonus * max``.

    Works on any grid, square or not: cells at the right and bottom edges are cropped when ``grid`` does
    not divide ``h`` or ``w``. ``max`` is each sample's largest absolute score (so the bonus is never a
    penalty when scores are negative, as V-norm scores can be). Ties inside a cell go to the first token in
    the cell's row-major order. Six tensor operations whatever the grid size, eight on a cropped grid (this
    runs in every partial block of every step).

    Args:
        score: ``(B, h*w)`` scores, tokens in row-major order.
        h, w: grid size.
        grid: cell size ``g`` (``<= 1`` or ``bonus == 0`` returns ``score`` unchanged).
        bonus: ``b``.
        layout: :func:`cell_layout` ``(h, w, grid)`` on ``score``'s device, if the caller keeps one.

    Returns:
        ``(B, h*w)`` scores with the bonus added.

    Example:
        >>> spatial_bonus(torch.tensor([[1.0, 2.0, 3.0]]), 1, 3, 2, 0.5)  # cells {0, 1} and {2}
        tensor([[1.0000, 3.5000, 4.5000]])
    """
    if grid <= 1 or bonus == 0:
        return score
    b, n = score.shape
    if n != h * w:
        raise ValueError(f"{n} tokens do not match the {h}x{w} grid; allowed: scores of h*w tokens")
    if layout is None:
        layout = cell_layout(h, w, grid, score.device)
    src = score
    if h % grid or w % grid:  # cropped cells read position h*w: a -inf that never wins (each cell has a token)
        src = torch.cat([score, score.new_full((b, 1), float("-inf"))], dim=1)
    idx = cell_argmax(src, layout)  # (B, cells)
    top = torch.linalg.vector_norm(score, ord=float("inf"), dim=1, keepdim=True)  # |max|: V-norm scores can be < 0
    return score.scatter_add(1, idx, (bonus * top).expand(-1, idx.shape[1]))


def select_fresh(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, k)`` of the ``k`` highest scores per row (ties: lower index first)."""
    if not 0 <= k <= score.shape[1]:
        raise ValueError(f"k={k} is invalid; allowed: 0..{score.shape[1]}")
    return torch.sort(score, dim=1, descending=True, stable=True).indices[:, :k]


def fresh_count(ratio: float, num_tokens: int) -> int:
    """``floor(clamp(ratio, 0, 1) * num_tokens)``: how many tokens a partial module recomputes."""
    return int(min(max(ratio, 0.0), 1.0) * num_tokens + 1e-9)
