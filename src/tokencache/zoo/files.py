"""Where the zoo's weights live, and how they are written and verified (sha256 in `checksums.json`).

The weights directory is flat (`unet.safetensors`, `unet.json`, `vae.safetensors`, ...) because the package
data globs in `pyproject.toml` only match files directly inside `zoo/weights/`.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_DIR = Path(__file__).parent / "weights"
CHECKSUMS_FILE = "checksums.json"
TOKENIZER_FILES = ("clip_vocab.json", "clip_merges.txt")


class ChecksumError(RuntimeError):
    """A zoo file is missing from `checksums.json` or its sha256 does not match."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(weights_dir: Path) -> dict[str, str]:
    """Recomputes `checksums.json` over every file in `weights_dir` (except itself) and writes it.

    Returns:
        `dict[str, str]`: file name -> sha256.
    """
    weights_dir = Path(weights_dir)
    sums = {
        p.name: sha256_of(p)
        for p in sorted(weights_dir.iterdir())
        if p.is_file() and p.name != CHECKSUMS_FILE and not p.name.startswith(".")
    }
    (weights_dir / CHECKSUMS_FILE).write_text(json.dumps(sums, indent=2, sort_keys=True) + "\n")
    return sums


def verify_files(weights_dir: Path, names: list[str] | tuple[str, ...]) -> None:
    """Checks that each named file exists and matches its sha256 in `checksums.json`.

    Args:
        weights_dir (`Path`): the directory holding the files and `checksums.json`.
        names (`list[str]`): file names inside `weights_dir`.

    Raises:
        `FileNotFoundError`: a file or `checksums.json` is missing.
        `ChecksumError`: a file has no recorded checksum, or its sha256 differs; the message names the file.
    """
    weights_dir = Path(weights_dir)
    sums_path = weights_dir / CHECKSUMS_FILE
    if not sums_path.is_file():
        raise FileNotFoundError(f"zoo checksum file not found: {sums_path}")
    sums = json.loads(sums_path.read_text())
    for name in names:
        path = weights_dir / name
        if not path.is_file():
            raise FileNotFoundError(
                f"zoo file not found: {path} (train it with `python -m tokencache.zoo.train`)"
            )
        if name not in sums:
            raise ChecksumError(f"zoo file {path} has no entry in {sums_path}")
        actual = sha256_of(path)
        if actual != sums[name]:
            raise ChecksumError(
                f"checksum mismatch for zoo file {path}: sha256 {actual}, expected {sums[name]} "
                f"(corrupted or modified; retrain or restore it)"
            )


def save_weights(
    weights_dir: Path, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Writes `{name}.safetensors` (float32 CPU tensors) and `{name}.json` (configs + training info)."""
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    save_file(tensors, str(weights_dir / f"{name}.safetensors"))
    (weights_dir / f"{name}.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_weights(
    weights_dir: Path, name: str, verify: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads `{name}.safetensors` and `{name}.json`, verifying both checksums first (unless `verify=False`).
    """
    weights_dir = Path(weights_dir)
    files = [f"{name}.safetensors", f"{name}.json"]
    if verify:
        verify_files(weights_dir, files)
    tensors = load_file(str(weights_dir / files[0]))
    meta = json.loads((weights_dir / files[1]).read_text())
    return tensors, meta


def split_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of `tensors` under `prefix.`, with the prefix removed."""
    start = prefix + "."
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}
