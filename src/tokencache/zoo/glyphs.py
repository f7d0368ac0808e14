"""Tier-2 data: capital letters rendered offline from the TTF fonts that ship with matplotlib.

Images are `(N, 1, 32, 32)` floats in `[0, 1]`, ink = 1 on a black background (the classifier's space);
the tier-2 diffusion models see them as `x * 2 - 1` (model space, also their latent: the shipped VAE is the
tier-1 near-identity map, which is fully convolutional and so works at 32x32 unchanged).

The split is **by font**: the 21 text fonts are split into 16 train and 5 test fonts, one test font per
family (DejaVu Sans, Sans Mono, Serif, STIX, Computer Modern) whose family keeps its other styles in train,
so test glyphs come from fonts no model saw. Each glyph is rendered once at high resolution (memoised in
memory, nothing on disk), then augmented with seeded scale, rotation, translation and stroke weight.
"""

import functools
import math
import os
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

GLYPH_SIZE = 32
NUM_CLASSES = 26
CLASSES = tuple(chr(ord("A") + i) for i in range(NUM_CLASSES))
"""Class `i` is the capital letter `CLASSES[i]` (`"A"` .. `"Z"`)."""

_RENDER_SIZE = 2 * GLYPH_SIZE  # augment at 2x, then area-downsample: smooth edges after rotation
_FILL = 0.75  # the glyph's longer side spans 75% of the canvas before augmentation

FONT_STYLES: dict[str, str] = {
    "DejaVuSans": "sans-serif",
    "DejaVuSans-Bold": "bold sans-serif",
    "DejaVuSans-Oblique": "italic sans-serif",
    "DejaVuSans-BoldOblique": "bold italic sans-serif",
    "DejaVuSansMono": "monospace",
    "DejaVuSansMono-Bold": "bold monospace",
    "DejaVuSansMono-Oblique": "italic monospace",
    "DejaVuSansMono-BoldOblique": "bold italic monospace",
    "DejaVuSerif": "serif",
    "DejaVuSerif-Bold": "bold serif",
    "DejaVuSerif-Italic": "italic serif",
    "DejaVuSerif-BoldItalic": "bold italic serif",
    "STIXGeneral": "serif",
    "STIXGeneralBol": "bold serif",
    "STIXGeneralItalic": "italic serif",
    "STIXGeneralBolIta": "bold italic serif",
    "cmr10": "serif",
    "cmb10": "bold serif",
    "cmti10": "italic serif",
    "cmss10": "sans-serif",
    "cmtt10": "monospace",
}
"""The text fonts used (file stem -> style words for prompts); symbol and display fonts are left out."""

TEST_FONTS = ("DejaVuSans-BoldOblique", "DejaVuSansMono-Bold", "DejaVuSerif-Italic", "STIXGeneralBol", "cmb10")
TRAIN_FONTS = tuple(name for name in FONT_STYLES if name not in TEST_FONTS)


class GlyphSplit(NamedTuple):
    """The train/test glyphs of `glyph_split`; unpacks as `x_train, y_train, x_test, y_test, *fonts`."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    train_fonts: tuple[str, ...]
    test_fonts: tuple[str, ...]
    font_train: torch.Tensor
    """Index into `train_fonts` of each train image."""
    font_test: torch.Tensor
    """Index into `test_fonts` of each test image."""


def font_path(font: str) -> str:
    """Path of a matplotlib-shipped TTF font named by its file stem (a key of `FONT_STYLES`)."""
    if font not in FONT_STYLES:
        raise ValueError(f"font must be one of the text fonts in FONT_STYLES, got {font!r}")
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", f"{font}.ttf")


@functools.lru_cache(maxsize=1024)
def _render(font: str, char: str, size: int) -> np.ndarray:
    from matplotlib.ft2font import FT2Font, LoadFlags

    face = FT2Font(font_path(font))
    face.set_size(4 * size, 72)  # render large, then fit: sizes are normalised per glyph below
    face.set_text(char, 0.0, flags=LoadFlags.NO_HINTING)
    face.draw_glyphs_to_bitmap(antialiased=True)
    ink = np.asarray(face.get_image(), dtype=np.float32) / 255.0
    rows, cols = np.nonzero(ink > 0.05)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    # pad to a square canvas, centred on the ink's bounding box
    side = math.ceil(max(ink.shape) / _FILL)
    canvas = np.zeros((side, side), dtype=np.float32)
    top, left = (side - ink.shape[0]) // 2, (side - ink.shape[1]) // 2
    canvas[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    out = F.interpolate(torch.from_numpy(canvas)[None, None], size=(size, size), mode="area")
    return out[0, 0].clamp(0, 1).numpy()


def render_glyph(font: str, char: str, size: int = GLYPH_SIZE) -> torch.Tensor:
    """Renders one character, centred, its longer side spanning 75% of a square canvas. Deterministic.

    Args:
        font (`str`): a font file stem from `FONT_STYLES`, e.g. `"DejaVuSerif-Bold"`.
        char (`str`): one character the font has, e.g. `"K"`.
        size (`int`, defaults to 32): side of the output in pixels (8-512).

    Returns:
        `torch.Tensor`: `(size, size)` float32 in `[0, 1]`, ink = 1.

    Example:
        ```py
        >>> render_glyph("cmr10", "K").shape
        torch.Size([32, 32])
        ```
    """
    if not isinstance(char, str) or len(char) != 1 or char.isspace():
        raise ValueError(f"char must be one visible character, got {char!r}")
    if not 8 <= int(size) <= 512:
        raise ValueError(f"size must be an integer in 8-512, got {size!r}")
    return torch.from_numpy(_render(font, char, int(size)).copy())


def augment_glyphs(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Seeded augmentation of `(N, 1, 64, 64)` renders into `(N, 1, 32, 32)` glyphs in `[0, 1]`.

    Stroke weight: a third of the images are dilated and a third eroded by one pixel at 64x64 (half a pixel at
    32x32). Geometry: scale 0.8-1.1, rotation +-10 degrees, translation +-2 pixels (at 32x32).
    """
    n = images.shape[0]
    weight = torch.randint(0, 3, (n, 1, 1, 1), generator=gen)
    dilated = F.max_pool2d(images, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-images, 3, stride=1, padding=1)
    images = torch.where(weight == 1, dilated, torch.where(weight == 2, eroded, images))
    scale = 0.8 + 0.3 * torch.rand(n, generator=gen)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 * 2 / GLYPH_SIZE)  # +-2 px in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], -1), torch.stack([sin, cos, shift[:, 1]], -1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(warped, 2).clamp(0, 1)


def base_renders(fonts: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Un-augmented 64x64 renders of every letter of every font, for on-the-fly augmentation.

    Returns:
        `tuple`: `(images (F*26, 1, 64, 64), labels (F*26,), font indices (F*26,))`, letter-major per font.
    """
    base = torch.stack([render_glyph(f, c, _RENDER_SIZE) for f in fonts for c in CLASSES]).unsqueeze(1)
    labels = torch.arange(NUM_CLASSES).repeat(len(fonts))
    font_idx = torch.arange(len(fonts)).repeat_interleave(NUM_CLASSES)
    return base, labels, font_idx


def _glyphs(fonts: tuple[str, ...], per_font: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    base, labels, font_idx = base_renders(fonts)
    x = augment_glyphs(base.repeat(per_font, 1, 1, 1), gen)
    return x, labels.repeat(per_font), font_idx.repeat(per_font)


def glyph_split(seed: int = 0, per_font: int = 8, test_per_font: int | None = None) -> GlyphSplit:
    """Augmented glyphs of the 26 capitals, split by font (16 train fonts, 5 test fonts).

    Args:
        seed (`int`, defaults to 0): seeds the augmentation (the glyph renders themselves are deterministic).
        per_font (`int`, defaults to 8): augmented copies of each (train font, letter): 416 * `per_font`
            train images.
        test_per_font (`int`, *optional*): copies of each (test font, letter), 130 * it test images; defaults
            to `per_font`. The test glyphs depend only on `seed` and `test_per_font`.

    Returns:
        `GlyphSplit`: `x_*` are `(N, 1, 32, 32)` float32 in `[0, 1]`, `y_*` int64 labels 0-25 (`CLASSES`),
        `font_*` int64 indices into `train_fonts` / `test_fonts`. Ordered letter-major within each copy.

    Example:
        ```py
        >>> x_train, y_train, x_test, y_test, train_fonts, test_fonts, *_ = glyph_split(seed=0, per_font=2)
        >>> x_train.shape, x_test.shape
        (torch.Size([832, 1, 32, 32]), torch.Size([260, 1, 32, 32]))
        ```
    """
    test_per_font = per_font if test_per_font is None else test_per_font
    for name, value in (("per_font", per_font), ("test_per_font", test_per_font)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    # separate generators: the test set does not change when per_font does
    x_train, y_train, f_train = _glyphs(TRAIN_FONTS, per_font, torch.Generator().manual_seed(2 * seed))
    x_test, y_test, f_test = _glyphs(TEST_FONTS, test_per_font, torch.Generator().manual_seed(2 * seed + 1))
    return GlyphSplit(x_train, y_train, x_test, y_test, TRAIN_FONTS, TEST_FONTS, f_train, f_test)


def glyph_prompt(label: int, style: str | None = None) -> str:
    """The prompt for letter `label` (0-25), e.g. `"the letter K in a bold serif font"`.

    Args:
        label (`int`): class 0-25 (`CLASSES[label]`).
        style (`str`, *optional*): style words (a value of `FONT_STYLES`, or a font stem from it, which is
            mapped to its style); without it the prompt is `"the letter K"`.
    """
    if not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(f"label must be an integer 0-{NUM_CLASSES - 1}, got {label!r}")
    letter = CLASSES[int(label)]
    if style is None:
        return f"the letter {letter}"
    style = FONT_STYLES.get(style, style)
    if style not in set(FONT_STYLES.values()):
        allowed = ", ".join(sorted(set(FONT_STYLES.values())))
        raise ValueError(f"style must be a font stem or one of {allowed}; got {style!r}")
    return f"the letter {letter} in a {style} font"


def to_glyph_space(images: torch.Tensor) -> torch.Tensor:
    """Maps pipeline images `(N, C, 32, 32)` (or `(N, 32, 32)`) in `[0, 1]` to grey `(N, 1, 32, 32)`."""
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[-2:] != (GLYPH_SIZE, GLYPH_SIZE):
        raise ValueError(f"images must be (N, C, 32, 32) or (N, 32, 32), got {tuple(images.shape)}")
    return images.float().mean(dim=1, keepdim=True).clamp(0.0, 1.0)
