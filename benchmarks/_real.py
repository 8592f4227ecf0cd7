"""Loading the shared real data set (`../shared/data/real`, README there) for benchmarks.

DSB2018 images come as one gray channel or (Y, X, 3) RGB; `load_dsb` gives every image
as one gray float channel with bright nuclei (RGB averaged; inverted when the nuclei
are darker than the background, as in stained brightfield). The split is fixed: every
fifth image (sorted by id) is held out from the starter model's training, and the
benchmarks evaluate on held-out images only.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_unet.core import io

HOLD_OUT_EVERY = 5


@dataclass(frozen=True)
class Entry:
    id: str
    cls: str
    shape: tuple[int, ...]
    n_objects: int
    touching_pairs: int
    held_out: bool


def dsb_index(root: str | Path) -> list[Entry]:
    rows = sorted(
        csv.DictReader((Path(root) / "dsb2018" / "index.csv").open()), key=lambda r: r["id"]
    )
    return [
        Entry(
            id=r["id"],
            cls=r["cls"],
            shape=tuple(int(v) for v in r["shape"].split("x")),
            n_objects=int(r["n_objects"]),
            touching_pairs=int(r["touching_pairs"]),
            held_out=i % HOLD_OUT_EVERY == 0,
        )
        for i, r in enumerate(rows)
    ]


def gray(image: np.ndarray) -> np.ndarray:
    """A colour image (Y, X, 3 or 4) as the float32 mean of its colour channels."""
    return image[..., :3].astype(np.float32).mean(axis=-1)


def load_dsb(root: str | Path, entry_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(gray float32 image with bright nuclei, uint16 instance labels)."""
    base = Path(root) / "dsb2018"
    image = io.read(base / "images" / f"{entry_id}.tif").astype(np.float32)
    labels = io.read(base / "labels" / f"{entry_id}.tif")
    if image.ndim == 3:
        image = gray(image)
    if labels.any() and image[labels > 0].mean() < image[labels == 0].mean():
        image = image.max() - image  # dark nuclei (brightfield) -> bright
    return image, labels


def load_phase(root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The (30, 1022, 1024) phase-contrast stack and its labels."""
    base = Path(root) / "usiigaci_phase"
    return io.read(base / "image.tif"), io.read(base / "labels.tif")
