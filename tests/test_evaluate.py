"""tokencache eval: fidelity and FD on tiny folders against hand-computed values, and clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy import linalg

from tokencache.harness.evaluate import FeatureExtractor, evaluate, fidelity, frechet


def _png(path, value, size=8):
    arr = np.asarray(value, dtype=np.uint8)
    if arr.ndim == 0:
        arr = np.full((size, size, 3), arr, dtype=np.uint8)
    Image.fromarray(arr).save(path)


@pytest.fixture
def folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for i, (va, vb) in enumerate([(138, 128), (100, 90)]):
        _png(a / f"{i}.png", va)
        _png(b / f"{i}.png", vb)
    return a, b


def test_fidelity_hand_computed(folders):
    a, b = folders
    res = fidelity(a, b)
    expect_psnr = 20 * math.log10(255 / 10)  # every pixel differs by 10/255 in both images
    assert res["psnr"] == pytest.approx(expect_psnr, abs=1e-6)
    assert res["rel_l1"] == pytest.approx(10 / ((128 + 90) / 2), rel=1e-6)
    assert res["n"] == 2 and res["ssim"] < 1.0
    assert fidelity(b, b)["rel_l1"] == 0.0


def test_fd_pixels_hand_computed(tmp_path):
    rng = np.random.default_rng(0)
    feats = {}
    for name in ("x", "y"):
        d = tmp_path / name
        d.mkdir()
        rows = []
        for i in range(6):
            img = rng.integers(0, 256, size=(2, 2, 3), dtype=np.uint8)
            img[..., 1] = img[..., 2] = img[..., 0]  # grey, so the channel mean is exact
            _png(d / f"{i}.png", img)
            rows.append(img[..., 0].astype(np.float64).reshape(-1) / 255)
        feats[name] = np.stack(rows)
    mu1, mu2 = feats["x"].mean(0), feats["y"].mean(0)
    s1, s2 = np.cov(feats["x"], rowvar=False), np.cov(feats["y"], rowvar=False)
    expect = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    got = frechet(tmp_path / "x", tmp_path / "y", FeatureExtractor("pixels", pixel_size=2))
    assert got == pytest.approx(expect, rel=1e-6, abs=1e-9)
    # statistics round-trip through .npz: FD against x's saved stats equals FD against the folder x
    res = evaluate(tmp_path / "x", save_stats=tmp_path / "x.npz", fd_ref=tmp_path / "y", features="pixels")
    res2 = evaluate(tmp_path / "y", fd_ref=tmp_path / "x.npz", features="pixels")
    ref = frechet(tmp_path / "x", tmp_path / "y", FeatureExtractor("pixels"))  # default 8x8 pixel features
    assert res["fd"] == pytest.approx(ref, rel=1e-6) and res2["fd"] == pytest.approx(ref, rel=1e-6)


def test_cli_json(folders, capsys):
    from tokencache.cli import main

    a, b = folders
    assert main(["eval", str(a), "--baseline", str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["psnr"] == pytest.approx(20 * math.log10(25.5), abs=1e-6)
    assert main(["eval", str(a)]) == 2
    assert "nothing to compute" in capsys.readouterr().err


def test_errors_name_the_file(folders, tmp_path):
    a, b = folders
    with pytest.raises(FileNotFoundError, match="nope.*does not exist"):
        fidelity(tmp_path / "nope", b)
    with pytest.raises(FileNotFoundError, match="nobase.*does not exist"):
        fidelity(a, tmp_path / "nobase")
    (b / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match="lacks 1 image.*'1.png'"):
        fidelity(a, b)
    (a / "2.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="2.png.*cannot be read"):
        evaluate(a, fd_ref=a, features="pixels")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty.*holds no images"):
        fidelity(empty, b)
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match="bad.npz.*lacks array.*sigma"):
        frechet(tmp_path / "bad.npz", tmp_path / "bad.npz", FeatureExtractor("pixels"))
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        frechet(tmp_path / "missing.npz", b, FeatureExtractor("pixels"))
    with pytest.raises(ValueError, match="needs --inception-weights"):
        FeatureExtractor("inception")
    with pytest.raises(FileNotFoundError, match="incep.pt.*does not exist"):
        FeatureExtractor("inception", tmp_path / "incep.pt")
    with pytest.raises(ValueError, match="--features 'vgg' is invalid"):
        FeatureExtractor("vgg")
    with pytest.raises(FileNotFoundError, match="manifest.jsonl"):
        evaluate(b, clip_model=tmp_path)
    c = tmp_path / "c"
    c.mkdir()
    _png(c / "0.png", 1, size=4)
    _png(c / "1.png", 1, size=5)
    with pytest.raises(ValueError, match="1.png.*same size"):
        evaluate(c, fd_ref=c, features="pixels")


def test_fd_glyph_features_match_the_tier2_classifier(tmp_path):
    """`--features glyphs`: FD in the tier-2 glyph classifier's features, PNGs at 32x32 or resized to it."""
    import torch

    from tokencache import zoo
    from tokencache.metrics import frechet_distance

    sets = {}
    for name, font in (("serif", "cmr10"), ("sans", "DejaVuSans")):
        d = tmp_path / name
        d.mkdir()
        glyphs = torch.stack([zoo.render_glyph(font, chr(ord("A") + i)) for i in range(8)])
        for i, g in enumerate(glyphs):
            _png(d / f"{i}.png", np.repeat((g.numpy() * 255).round().astype(np.uint8)[..., None], 3, -1))
        sets[name] = glyphs
    clf = zoo.load_classifier(tier=2)
    feats = {k: clf.features((torch.round(v * 255) / 255)[:, None].double().float()) for k, v in sets.items()}
    expect = float(frechet_distance(feats["serif"], feats["sans"]))
    res = evaluate(tmp_path / "serif", fd_ref=tmp_path / "sans", features="glyphs")
    assert res["fd"] == pytest.approx(expect, rel=1e-4) and expect > 0
    big = tmp_path / "big"  # 64x64 PNGs are area-resized to the classifier's 32x32
    big.mkdir()
    for i, g in enumerate(sets["serif"]):
        up = g.repeat_interleave(2, 0).repeat_interleave(2, 1)
        _png(big / f"{i}.png", np.repeat((up.numpy() * 255).round().astype(np.uint8)[..., None], 3, -1))
    assert evaluate(big, fd_ref=tmp_path / "sans", features="glyphs")["fd"] == pytest.approx(expect, rel=1e-3)
