"""Tiny Omniglot-shaped archives (Pillow-drawn 105x105 1-bit PNGs in the archives' zip
layout), for the Omniglot loader's tests and the TFDS Omniglot comparison."""

from __future__ import annotations

import io
import pathlib
import zipfile

import numpy as np
from PIL import Image

# Tiny layout: background has 2 alphabets / 3 characters, evaluation 1 / 2.
TINY_LAYOUT = {
    "images_background": {"Beta": 1, "Alpha": 2},  # deliberately unsorted
    "images_evaluation": {"Gamma": 2},
}
TINY_COUNTS = {
    "images_background": (2, 3, 60),
    "images_evaluation": (1, 2, 40),
}
TINY_NAMES = [
    "background/Alpha/character01",
    "background/Alpha/character02",
    "background/Beta/character01",
    "evaluation/Gamma/character01",
    "evaluation/Gamma/character02",
]


def _png_bytes(rng: np.random.RandomState) -> bytes:
    # Black strokes (False) on white paper (True), like the real data: a few random
    # rectangles so every drawing differs and resizing has something to anti-alias.
    paper = np.ones((105, 105), dtype=bool)
    for _ in range(4):
        r, c = rng.randint(0, 90, size=2)
        h, w = rng.randint(3, 15, size=2)
        paper[r : r + h, c : c + w] = False
    buf = io.BytesIO()
    Image.fromarray(paper).convert("1").save(buf, format="PNG")
    return buf.getvalue()


def make_archive(
    path: pathlib.Path,
    stem: str,
    layout: dict[str, int],
    *,
    seed: int = 0,
    drawings: int = 20,
    short_char: tuple[str, int] | None = None,
) -> dict[str, bytes]:
    """Writes an Omniglot-layout zip (stored, like the shared re-packed copies)."""
    rng = np.random.RandomState(seed)
    members: dict[str, bytes] = {}
    char_id = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{stem}/", b"")
        for alphabet, n_chars in layout.items():
            zf.writestr(f"{stem}/{alphabet}/", b"")
            for c in range(1, n_chars + 1):
                char_id += 1
                n = drawings - 1 if short_char == (alphabet, c) else drawings
                for d in range(1, n + 1):
                    name = f"{stem}/{alphabet}/character{c:02d}/{char_id:04d}_{d:02d}.png"
                    members[name] = _png_bytes(rng)
                    zf.writestr(name, members[name])
    return members
