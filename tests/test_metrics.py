import math

import numpy as np
import pytest
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from tokencache import zoo
from tokencache.metrics import (
    ClassifierFeatures,
    class_accuracy,
    classifier_features,
    clip_score,
    feature_stats,
    frechet_distance,
    frechet_distance_from_stats,
    load_local_clip,
    load_stats,
    make_clip_score,
    make_fid,
    psnr,
    rel_l1,
    save_stats,
    ssim,
    to_uint8,
)
from tokencache.zoo.tokenizer import (
    BOS_TOKEN,
    EOS_TOKEN,
    build_vocab_and_merges,
    load_tokenizer,
    write_tokenizer_files,
)


@pytest.fixture(scope="module")
def classifier():
    return zoo.load_classifier()


@pytest.fixture(scope="module")
def test_digits():
    _, _, x_test, y_test = zoo.load_digits_split()
    return x_test, y_test


# ---------------------------------------------------------------- fidelity


def test_psnr_of_known_mse():
    b = torch.zeros(2, 3, 8, 8)
    assert psnr(b + 0.1, b, data_range=1.0).item() == pytest.approx(20.0, abs=1e-5)
    assert psnr(b + 0.1, b, data_range=2.0).item() == pytest.approx(10 * math.log10(4 / 0.01), abs=1e-5)
    # per-sample PSNR is averaged: MSE 1e-2 -> 20 dB and 1e-4 -> 40 dB
    a = torch.cat([torch.full((1, 3, 8, 8), 0.1), torch.full((1, 3, 8, 8), 0.01)])
    assert psnr(a, b).item() == pytest.approx(30.0, abs=1e-5)
    assert math.isinf(psnr(b, b).item())


def test_rel_l1_exact():
    a = torch.tensor([[1.0, 3.0], [0.0, 4.0]])
    b = torch.tensor([[2.0, 2.0], [2.0, 2.0]])
    # mean|a - b| = (1 + 1 + 2 + 2) / 4 = 1.5, mean|b| = 2
    assert rel_l1(a, b).item() == pytest.approx(0.75, abs=1e-12)
    assert rel_l1(b, b).item() == 0.0
    assert rel_l1(-b, b).item() == pytest.approx(2.0, abs=1e-12)


def test_ssim_identical_is_one_and_noise_lowers_it():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    value = ssim(noisy, x).item()
    assert 0.0 < value < 0.9
    small = torch.rand(2, 1, 8, 8, generator=g)
    assert ssim(small, small).item() == pytest.approx(1.0, abs=1e-5)


def test_fidelity_shape_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="shapes differ"):
        rel_l1(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError):
        ssim(torch.zeros(2, 16), torch.zeros(2, 16))


# ---------------------------------------------------------------- Frechet distance


def test_frechet_distance_identical_sets_is_zero():
    feats = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))
    assert abs(frechet_distance(feats, feats).item()) < 1e-9


def test_frechet_distance_of_shifted_set_is_squared_shift():
    feats = torch.randn(400, 5, generator=torch.Generator().manual_seed(2)) @ torch.randn(5, 5)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(feats, feats + shift).item() == pytest.approx(1 + 4 + 0.25 + 9, abs=1e-5)


def test_frechet_distance_of_gaussians_matches_closed_form():
    # diagonal Gaussians: FD = |mu_a - mu_b|^2 + sum (s_a - s_b)^2 with s the standard deviations
    mu_a, mu_b = torch.tensor([0.0, 1.0]), torch.tensor([2.0, 1.0])
    sigma_a, sigma_b = torch.diag(torch.tensor([1.0, 4.0])), torch.diag(torch.tensor([9.0, 1.0]))
    expected = 4.0 + (1 - 3) ** 2 + (2 - 1) ** 2
    assert frechet_distance_from_stats(mu_a, sigma_a, mu_b, sigma_b).item() == pytest.approx(
        expected, abs=1e-9
    )


def test_frechet_distance_matches_scipy_reference():
    from scipy import linalg

    g = torch.Generator().manual_seed(3)
    a = torch.randn(200, 4, generator=g)
    b = torch.randn(150, 4, generator=g) * 1.5 + 0.3
    mu_a, s_a = a.double().mean(0).numpy(), np.cov(a.double().numpy(), rowvar=False)
    mu_b, s_b = b.double().mean(0).numpy(), np.cov(b.double().numpy(), rowvar=False)
    ref = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * linalg.sqrtm(s_a @ s_b).real)
    assert frechet_distance(a, b).item() == pytest.approx(ref, rel=1e-8)


def test_feature_stats_roundtrip_npz(tmp_path):
    feats = torch.randn(50, 3, generator=torch.Generator().manual_seed(4))
    mu, sigma = feature_stats(feats)
    torch.testing.assert_close(sigma, torch.from_numpy(np.cov(feats.double().numpy(), rowvar=False)))
    path = tmp_path / "stats.npz"
    save_stats(path, mu, sigma)
    mu2, sigma2 = load_stats(path)
    torch.testing.assert_close(mu2, mu)
    torch.testing.assert_close(sigma2, sigma)
    assert frechet_distance_from_stats(mu2, sigma2, mu, sigma).item() == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_stats(tmp_path / "missing.npz")


def test_torchmetrics_fd_with_classifier_extractor(classifier, test_digits):
    x_test, _ = test_digits
    fid = make_fid(ClassifierFeatures(classifier))
    real, fake = x_test[:180], x_test[180:]
    fid.update(real, real=True)
    fid.update(fake, real=False)
    expected = frechet_distance(classifier.features(real), classifier.features(fake)).item()
    assert fid.compute().item() == pytest.approx(expected, rel=1e-3)
    # noise moves the generated set away from the real one
    fid.reset()
    fid.update(real, real=True)
    fid.update((fake + 0.5 * torch.rand_like(fake)).clamp(0, 1), real=False)
    assert fid.compute().item() > 2 * expected


def test_inception_fid_requires_local_weights(tmp_path):
    missing = tmp_path / "pt_inception-2015-12-05.pth"
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05.pth"):
        make_fid(2048, feature_extractor_weights_path=missing)
    with pytest.raises(ValueError, match="feature_extractor_weights_path"):
        make_fid(2048)


# ---------------------------------------------------------------- accuracy


def test_class_accuracy_on_real_digits(classifier, test_digits):
    x_test, y_test = test_digits
    assert class_accuracy(x_test, y_test, classifier) >= 0.95
    assert class_accuracy(x_test, (y_test + 1) % 10, classifier) < 0.05
    # 16x16 three-channel images (what the pipelines return) are accepted too
    images = (zoo.to_model_space(x_test) + 1).div(2).expand(-1, 3, -1, -1)
    assert class_accuracy(images, y_test, classifier) >= 0.95
    assert classifier_features(x_test[:5], classifier).shape == (5, 64)
    with pytest.raises(ValueError, match="labels"):
        class_accuracy(x_test[:3], [0, 1], classifier)


# ---------------------------------------------------------------- CLIP score


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    write_tokenizer_files(root / "vocab.json", root / "merges.txt")
    tokenizer = load_tokenizer(root / "vocab.json", root / "merges.txt", max_length=16)
    vocab, _ = build_vocab_and_merges()
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "bos_token_id": vocab[BOS_TOKEN],
        "eos_token_id": vocab[EOS_TOKEN],
        "pad_token_id": vocab[EOS_TOKEN],
    }
    vision = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    out = root / "tiny-clip"
    model.save_pretrained(out)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


def test_clip_score_with_tiny_local_clip(tiny_clip_dir):
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    prompts = ["a handwritten 1", "a handwritten 2", "a handwritten 3"]
    score = clip_score(images, prompts, tiny_clip_dir)

    model, processor = load_local_clip(tiny_clip_dir)
    with torch.no_grad():
        pixels = processor(images=list(to_uint8(images)), return_tensors="pt")["pixel_values"]
        img = model.get_image_features(pixels).pooler_output
        enc = processor(text=prompts, return_tensors="pt", padding=True)
        txt = model.get_text_features(enc["input_ids"], enc["attention_mask"]).pooler_output
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    expected = max((100 * cos).mean().item(), 0.0)
    assert score.item() == pytest.approx(expected, abs=1e-3)

    metric = make_clip_score(tiny_clip_dir)
    metric.update(to_uint8(images), prompts)
    assert metric.compute().item() == pytest.approx(expected, abs=1e-3)


def test_clip_missing_directory_raises(tmp_path):
    missing = tmp_path / "no-such-clip"
    with pytest.raises(FileNotFoundError, match="no-such-clip"):
        load_local_clip(missing)
    with pytest.raises(FileNotFoundError, match="no-such-clip"):
        make_clip_score(missing)
