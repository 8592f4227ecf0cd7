"""Read and write images and label images (tif, png, npy) with checks people understand.

Only file formats and array sanity live here; no resampling, no normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

SUFFIXES = (".tif", ".tiff", ".png", ".npy")


class InputError(ValueError):
    """Bad user input (file, shape, dtype): the message is meant for a person."""


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(
            f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}"
        )
    return suffix


def read(path: str | Path) -> np.ndarray:
    """Read a tif, png or npy file into a numpy array (no pickles are ever loaded)."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except InputError:
        raise
    except Exception as exc:  # a corrupt file: say which and why, no traceback
        raise InputError(f"{path}: cannot read it as {suffix[1:]} ({exc})") from exc


def write(path: str | Path, data: np.ndarray) -> Path:
    """Write an array; the file is written whole to a temporary name, then renamed."""
    path = Path(path)
    suffix = _suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{suffix}")
    data = np.asarray(data)
    if suffix == ".npy":
        np.save(tmp, data)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(tmp, data, compression="zlib")
    else:
        if data.ndim not in (2, 3) or data.dtype not in (np.uint8, np.uint16):
            raise InputError(
                f"{path}: png holds 2D uint8/uint16 images; got {data.dtype} {data.shape}. Use .tif"
            )
        import imageio.v3 as iio

        iio.imwrite(tmp, data)
    tmp.replace(path)
    return path


def as_image(data: np.ndarray, name: str = "image", channels: int = 1) -> np.ndarray:
    """Check an intensity image: 2D (Y, X) or a stack (N, Y, X); RGB(A) is refused for one channel.

    With ``channels > 1`` the channel axis is expected last or first: (Y, X, C), (C, Y, X),
    (N, Y, X, C) or (N, C, Y, X). Returns float32 (N, C, Y, X) with N=1 for a 2D image.
    """
    data = np.asarray(data)
    if data.dtype == bool or not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{name}: expected a numeric image, got dtype {data.dtype}")
    if np.issubdtype(data.dtype, np.complexfloating):
        raise InputError(f"{name}: complex images are not supported")
    if channels == 1:
        if data.ndim == 3 and data.shape[-1] in (3, 4) and data.shape[0] > 4:
            raise InputError(
                f"{name}: shape {data.shape} looks like an RGB image; the model wants one "
                "grayscale channel. Convert it to grayscale or split the channels first."
            )
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3:
            raise InputError(
                f"{name}: expected a 2D image (Y, X) or a stack (Z, Y, X); got shape {data.shape}"
            )
        out = data[:, None]
    else:
        if data.ndim == 3:
            data = data[None]
        if data.ndim != 4:
            raise InputError(
                f"{name}: expected {channels} channels as (Y, X, C) or (N, C, Y, X); got {data.shape}"
            )
        if data.shape[1] == channels:
            out = data
        elif data.shape[-1] == channels:
            out = np.moveaxis(data, -1, 1)
        else:
            raise InputError(
                f"{name}: the model wants {channels} channels; shape {data.shape} has none of that size"
            )
    out = out.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise InputError(
            f"{name}: the image holds NaN or infinite values; fill or crop them first"
        )
    return out


def as_labels(data: np.ndarray, name: str = "labels", max_ndim: int = 3) -> np.ndarray:
    """Check an instance label image: integer, non-negative, 2D or a stack (up to
    ``max_ndim`` axes, e.g. 4 for (T, Z, Y, X)). Returns it unchanged."""
    data = np.asarray(data)
    if data.dtype == bool:
        return data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.floating):
        raise InputError(
            f"{name}: labels must be an integer image (0 = background, 1, 2, ... = cells); "
            f"got {data.dtype}. Is this an intensity image rather than labels?"
        )
    if not np.issubdtype(data.dtype, np.integer):
        raise InputError(f"{name}: labels must be an integer image; got dtype {data.dtype}")
    if not 2 <= data.ndim <= max_ndim:
        raise InputError(f"{name}: expected labels (Y, X) or (Z, Y, X); got shape {data.shape}")
    if data.size and data.min() < 0:
        raise InputError(f"{name}: labels must be >= 0 (0 = background); found {data.min()}")
    return data


def check_same_shape(
    image_shape: tuple[int, ...],
    labels_shape: tuple[int, ...],
    image: str = "image",
    labels: str = "labels",
) -> None:
    """Image and labels must cover the same pixels (ignoring a channel axis of the image)."""
    if tuple(image_shape) != tuple(labels_shape):
        raise InputError(
            f"Labels {labels!r} has shape {tuple(labels_shape)} but image {image!r} has "
            f"{tuple(image_shape)}: pick a labels layer of the same shape."
        )


LABELS_SUFFIX = "_labels"  # NAME.tif pairs with NAME_labels.tif in a folder of pairs


def training_pairs(paths: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """(image, labels) file pairs from ``IMAGE LABELS [IMAGE2 LABELS2 ...]`` or one folder.

    A folder holds either ``images/`` and ``labels/`` subfolders with files of the same
    names, or ``NAME.ext`` next to ``NAME_labels.ext``.
    """
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        if (folder / "images").is_dir() and (folder / "labels").is_dir():
            images = sorted(
                p for p in (folder / "images").iterdir() if p.suffix.lower() in SUFFIXES
            )
            pairs = [(p, folder / "labels" / p.name) for p in images]
        else:
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
            pairs = [
                (p, p.with_name(p.stem + LABELS_SUFFIX + p.suffix))
                for p in files
                if not p.stem.endswith(LABELS_SUFFIX)
            ]
        missing = [str(labels) for _, labels in pairs if not labels.is_file()]
        if not pairs or missing:
            raise InputError(
                f"{folder}: no image/labels pairs found"
                + (f" (missing {', '.join(missing[:3])})" if missing else "")
                + f"; use images/ + labels/ subfolders or NAME.tif + NAME{LABELS_SUFFIX}.tif"
            )
        return pairs
    if len(paths) % 2:
        raise InputError(
            f"expected IMAGE LABELS pairs (an even number of files) or one folder; got {len(paths)}"
        )
    return list(zip(paths[::2], paths[1::2], strict=True))
