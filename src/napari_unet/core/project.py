"""A project folder keeps the work on one image: annotations, the trained model, settings.

The docks call it after each paint stroke (debounced) and after training, so a crash
or a kill loses at most the last stroke. Every write is atomic: the bytes go to a
temporary file in the same folder, are flushed to disk, then `os.replace` swaps it in,
so a reader finds the old file or the new one, never a half-written one. Pure Python
and numpy (no Qt); torch is imported only to save a model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

import numpy as np

from napari_unet.core.io import InputError

FOLDER_SUFFIX = ".napari-unet"  # cells.tif -> cells.napari-unet/ beside it
ANNOTATIONS = "annotations"  # one <layer name>.npy per annotation layer
SETTINGS = "settings.json"
MODEL = "model.safetensors"
_TEMPORARY = ".partial"


def folder_for(image_path: str | Path) -> Path:
    """The project folder next to an image file."""
    path = Path(image_path)
    return path.with_name(path.stem + FOLDER_SUFFIX)


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(file)`` on a temporary file, flush it to disk, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TEMPORARY}")
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _labels_file(folder: Path, name: str) -> Path:
    # quote() keeps any layer name a valid, reversible file name ("/" -> "%2F").
    return Path(folder) / ANNOTATIONS / (quote(name, safe=" ()-_,") + ".npy")


def save_labels(folder: str | Path, name: str, labels: np.ndarray) -> Path:
    """Write the annotation layer ``name`` (an integer array) into the project."""
    data = np.asarray(labels)
    if not np.issubdtype(data.dtype, np.integer):
        raise InputError(f"{name}: annotations must be integer labels; got {data.dtype}")
    return atomic_write(_labels_file(Path(folder), name), lambda f: np.save(f, data))


def saved_labels(folder: str | Path) -> list[str]:
    """Names of the annotation layers saved in the project (cheap: no data is read)."""
    directory = Path(folder) / ANNOTATIONS
    if not directory.is_dir():
        return []
    return [unquote(p.stem) for p in sorted(directory.glob("*.npy")) if not p.name.startswith(".")]


def load_labels(folder: str | Path) -> dict[str, np.ndarray]:
    """Every annotation layer saved in the project: {layer name: labels}."""
    directory = Path(folder) / ANNOTATIONS
    if not directory.is_dir():
        return {}
    found = {}
    for path in sorted(directory.glob("*.npy")):
        if path.name.startswith("."):
            continue  # a temporary file left by a kill: the saved file is intact
        try:
            found[unquote(path.stem)] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read these saved annotations ({exc})") from exc
    return found


def save_settings(folder: str | Path, settings: dict[str, Any]) -> Path:
    """Merge ``settings`` (plain JSON values) into the project's settings file."""
    merged = {**load_settings(folder), **settings}
    text = json.dumps(merged, indent=1, sort_keys=True, allow_nan=False).encode()
    return atomic_write(Path(folder) / SETTINGS, lambda f: f.write(text))


def load_settings(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / SETTINGS
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the project settings ({exc})") from exc


def save_model(folder: str | Path, net: Any, metadata: dict[str, Any]) -> Path:
    """Keep the trained model in the project (atomic, see `checkpoint.save`)."""
    from napari_unet.core import checkpoint

    return checkpoint.save(Path(folder) / MODEL, net, metadata)


def model_path(folder: str | Path) -> Path | None:
    path = Path(folder) / MODEL
    return path if path.is_file() else None
