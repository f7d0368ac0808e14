"""The one place the GPU benchmark imports tokencache's harness pieces from.

``shapes`` (published configs, the bare denoising loop) and ``peers`` (third-party installers) live in
``tokencache.harness``. Everything else the benchmark uses is the public API (``import tokencache as tc``)
and ``tokencache.config.CONFIG_CLASSES``.
"""

from __future__ import annotations

from tokencache.harness.peers import PEERS, PeerTarget, snapshot
from tokencache.harness.shapes import FLUX_VAE, MODELS, SD_VAE, make_loop

__all__ = ["FLUX_VAE", "MODELS", "SD_VAE", "make_loop", "PEERS", "PeerTarget", "snapshot"]
