"""Tiny trained reference models (tier 1: digits; tier 2: rendered glyphs) for judging cache quality offline.

Example:
    ```py
    >>> from tokencache import zoo
    >>> pipe = zoo.load("dit")
    >>> images = zoo.sample("dit", pipe, [0, 1, 2], seed=0, num_inference_steps=50, guidance_scale=3.0)
    >>> zoo.load_classifier()(images).argmax(-1)
    ```
"""

from .data import load_digits_split, to_digit_space, to_model_space
from .files import WEIGHTS_DIR, ChecksumError
from .glyphs import CLASSES, glyph_prompt, glyph_split, render_glyph, to_glyph_space
from .models import NULL_CLASS, DigitClassifier, GlyphClassifier
from .pipelines import (
    ALL_FAMILIES,
    FAMILIES,
    TIER2_FAMILIES,
    VIDEO_FAMILIES,
    call_encoder_free,
    family_tier,
    load,
    load_classifier,
    prompt_digit,
    prompt_letter,
    sample,
)
from .tokenizer import digit_prompt

__all__ = [
    "ALL_FAMILIES",
    "CLASSES",
    "FAMILIES",
    "NULL_CLASS",
    "TIER2_FAMILIES",
    "VIDEO_FAMILIES",
    "WEIGHTS_DIR",
    "ChecksumError",
    "call_encoder_free",
    "DigitClassifier",
    "digit_prompt",
    "family_tier",
    "glyph_prompt",
    "glyph_split",
    "GlyphClassifier",
    "load",
    "load_classifier",
    "load_digits_split",
    "prompt_digit",
    "prompt_letter",
    "render_glyph",
    "sample",
    "to_digit_space",
    "to_glyph_space",
    "to_model_space",
]
