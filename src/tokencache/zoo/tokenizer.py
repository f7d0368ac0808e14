"""A tiny byte-level BPE vocabulary for prompts like "a handwritten 7", in CLIP's file format.

Every byte has a token (alone and with the end-of-word suffix `</w>`), so any text tokenizes; the prompt words
below are merged into single tokens. `write_tokenizer_files` writes `vocab.json`/`merges.txt`-style files that
`load_tokenizer` reads back into a real `transformers.CLIPTokenizer`; nothing is downloaded.
"""

import json
from pathlib import Path

from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MAX_LENGTH = 16
WORDS = (
    "a", "an", "the", "of", "handwritten", "digit", "number",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)  # fmt: skip


def digit_prompt(digit: int) -> str:
    """The training prompt for `digit` (0-9): `"a handwritten 7"`."""
    return f"a handwritten {int(digit)}"


def letter_prompt(letter: int) -> str:
    """The tier-2 training prompt for letter class `letter` (0-25): `"the letter K"` (the tokenizer lowercases;
    "letter" is spelled in byte tokens, the vocabulary being tier 1's)."""
    letter = int(letter)
    if not 0 <= letter <= 25:
        raise ValueError(f"letter must be a class 0-25 (A-Z), got {letter}")
    return f"the letter {chr(ord('A') + letter)}"


def _byte_alphabet() -> list[str]:
    # GPT-2/CLIP's reversible byte -> printable unicode map.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return sorted(chars)


def build_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Builds the vocabulary and the ordered merge list.

    Returns:
        `tuple`: `(vocab, merges)`: token -> id, and the BPE merges, highest priority first.
    """
    chars = _byte_alphabet()
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars]:
        vocab[token] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            merged = pair[0] + pair[1]
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(merged, len(vocab))
            parts = [merged] + parts[2:]
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    return vocab, merges


def write_tokenizer_files(vocab_path: Path, merges_path: Path) -> None:
    """Writes the vocabulary (JSON) and merges (`#version: 0.2` text, one `left right` pair a line)."""
    vocab, merges = build_vocab_and_merges()
    Path(vocab_path).write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    Path(merges_path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_tokenizer(vocab_path: Path, merges_path: Path, max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """Builds a `CLIPTokenizer` from local vocabulary and merges files.

    Args:
        vocab_path (`Path`): JSON token -> id map.
        merges_path (`Path`): merges file; a leading `#version` line is skipped.
        max_length (`int`, defaults to 16): `model_max_length`, what `StableDiffusionPipeline` pads prompts
            to.

    Returns:
        `CLIPTokenizer`: pads with `<|endoftext|>`, like Stable Diffusion's tokenizer.

    Example:
        ```py
        >>> tok = load_tokenizer(WEIGHTS_DIR / "clip_vocab.json", WEIGHTS_DIR / "clip_merges.txt")
        >>> tok.convert_ids_to_tokens(tok("a handwritten 7").input_ids)
        ['<|startoftext|>', 'a</w>', 'handwritten</w>', '7</w>', '<|endoftext|>']
        ```
    """
    vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
    merges = []
    for line in Path(merges_path).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#version"):
            left, right = line.split(" ")
            merges.append((left, right))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
