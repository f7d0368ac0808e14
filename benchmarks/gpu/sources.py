"""The one place the GPU benchmark imports tokencache's harness pieces from.

``shapes`` (published configs, the bare denoising loop) and ``peers`` (third-party installers) are moving
into ``tokencache.harness``; re-point the imports here and nowhere else. Everything else the benchmark
uses is the public API (``import tokencache as tc``) and ``tokencache.config.CONFIG_CLASSES``.
"""

from __future__ import annotations

try:  # after the move
    from tokencache.harness.peers import PEERS, PeerTarget, snapshot
    from tokencache.harness.shapes import MODELS, SD_VAE, make_loop
except ImportError:  # before it
    from tokencache.peers import PEERS, PeerTarget, snapshot
    from tokencache.shapes import MODELS, SD_VAE, make_loop

__all__ = ["MODELS", "SD_VAE", "make_loop", "PEERS", "PeerTarget", "snapshot"]
