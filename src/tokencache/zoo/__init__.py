"""Tiny trained reference models (digits) for judging cache quality offline.

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
from .models import NULL_CLASS, DigitClassifier
from .pipelines import FAMILIES, load, load_classifier, sample
from .tokenizer import digit_prompt

__all__ = [
    "FAMILIES",
    "NULL_CLASS",
    "WEIGHTS_DIR",
    "ChecksumError",
    "DigitClassifier",
    "digit_prompt",
    "load",
    "load_classifier",
    "load_digits_split",
    "sample",
    "to_digit_space",
    "to_model_space",
]
