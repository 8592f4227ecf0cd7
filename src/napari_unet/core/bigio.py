"""Images bigger than memory: open TIFF / zarr / OME-Zarr / npy lazily, write labels chunk
by chunk to OME-Zarr (with a multiscale pyramid) or tiled BigTIFF.

Nothing here reads a whole image: callers slice the returned arrays region by region.
Small in-memory files (tif/png/npy) keep going through `io.py`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.io import InputError

ZARR_SUFFIXES = (".zarr",)
TIFF_SUFFIXES = (".tif", ".tiff")
PYRAMID_MIN_PX = 256  # stop downsampling once both sides are at most this (viewers' tile)


def is_zarr(path: str | Path) -> bool:
    return Path(path).suffix.lower() in ZARR_SUFFIXES


def open_image(path: str | Path) -> Any:
    """A lazily read array (slicing reads only that region) for a tif, zarr, OME-Zarr or npy.

    OME-Zarr: the full-resolution level, with singleton t/c/z axes dropped. A pyramidal TIFF:
    its first (full-resolution) level. png files are small and read at once.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        if suffix in ZARR_SUFFIXES:
            return _open_zarr(path)
        if suffix in TIFF_SUFFIXES:
            import tifffile
            import zarr

            node = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
            return node if hasattr(node, "shape") else node["0"]
        if suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
    except InputError:
        raise
    except Exception as exc:  # a corrupt file: say which and why, no traceback
        raise InputError(f"{path}: cannot read it ({type(exc).__name__}: {exc})") from exc
    from napari_unet.core import io

    return io.read(path)


def _open_zarr(path: Path) -> Any:
    import zarr

    node = zarr.open(str(path), mode="r")
    if hasattr(node, "shape"):
        return node
    attrs = dict(node.attrs)
    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not multiscales:
        raise InputError(f"{path}: a zarr group without OME-Zarr 'multiscales' metadata")
    meta = multiscales[0]
    array = node[meta["datasets"][0]["path"]]
    axes = [a["name"] if isinstance(a, dict) else a for a in meta.get("axes", [])]
    if axes and len(axes) == array.ndim:
        drop = tuple(
            0 if name in ("t", "c", "z") and size == 1 else slice(None)
            for name, size in zip(axes, array.shape, strict=True)
        )
        if any(d == 0 for d in drop):
            return _Squeezed(array, drop)
    return array


class _Squeezed:
    """A lazy view of an array with some singleton axes taken away."""

    def __init__(self, array: Any, index: tuple):
        self.array, self.index = array, index
        self.shape = tuple(s for s, i in zip(array.shape, index, strict=True) if i != 0)
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        it = iter(key)
        return np.asarray(self.array[tuple(0 if i == 0 else next(it) for i in self.index)])

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[...], dtype=dtype)


def create_zarr(path: str | Path, shape: tuple[int, ...], chunk: int, dtype: Any) -> Any:
    """A new chunked zarr array (chunk x chunk in the last two axes), zero-filled, on disk."""
    import zarr

    chunks = (*shape[:-2], min(chunk, shape[-2]), min(chunk, shape[-1]))
    return zarr.create_array(
        str(path), shape=shape, chunks=chunks, dtype=dtype, fill_value=0, overwrite=True
    )


def _downsample(block: np.ndarray, nearest: bool) -> np.ndarray:
    if nearest:  # labels: keep real ids
        return block[..., ::2, ::2]
    h, w = block.shape[-2] // 2 * 2, block.shape[-1] // 2 * 2
    even = block[..., :h, :w].reshape(*block.shape[:-2], h // 2, 2, w // 2, 2)
    out = even.mean(axis=(-3, -1), dtype=np.float32)
    if h == block.shape[-2] and w == block.shape[-1]:
        return out
    # An odd last row/column: keep its every second pixel.
    full = block[..., ::2, ::2].astype(np.float32)
    full[..., : h // 2, : w // 2] = out
    return full


def write_ome_zarr(
    path: str | Path,
    shape: tuple[int, int],
    chunk: int,
    dtype: Any,
    blocks: Callable[[int, int, int, int], np.ndarray],
    labels: bool,
) -> Path:
    """Write a (Y, X) OME-Zarr image whose full-resolution data ``blocks(y0, y1, x0, x1)``
    gives region by region, plus a 2x pyramid (nearest for labels, mean otherwise).

    Written to a temporary name and renamed: a half-written output never looks finished.
    """
    import zarr
    from ome_zarr.writer import write_multiscales_metadata

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    root = zarr.open_group(str(tmp), mode="w")
    levels = [
        root.create_array("0", shape=shape, chunks=(chunk, chunk), dtype=dtype, fill_value=0)
    ]
    for y0, y1, x0, x1 in _boxes(shape, chunk):
        levels[0][y0:y1, x0:x1] = blocks(y0, y1, x0, x1)
    while max(levels[-1].shape) > PYRAMID_MIN_PX:
        prev = levels[-1]
        size = ((prev.shape[0] + 1) // 2, (prev.shape[1] + 1) // 2)
        level = root.create_array(
            str(len(levels)), shape=size, chunks=(chunk, chunk), dtype=dtype, fill_value=0
        )
        for y0, y1, x0, x1 in _boxes(size, chunk):
            block = prev[2 * y0 : 2 * y1, 2 * x0 : 2 * x1]
            level[y0:y1, x0:x1] = _downsample(np.asarray(block), labels).astype(dtype)
        levels.append(level)
    datasets = [
        {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [2.0**i] * 2}]}
        for i in range(len(levels))
    ]
    write_multiscales_metadata(root, datasets, axes=["y", "x"], name=path.stem)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def write_bigtiff(
    path: str | Path,
    shape: tuple[int, int],
    chunk: int,
    dtype: Any,
    blocks: Callable[[int, int, int, int], np.ndarray],
) -> Path:
    """Write a tiled, zlib-compressed BigTIFF tile by tile (``chunk`` must be a multiple of 16)."""
    import tifffile

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")

    def tiles() -> Iterator[np.ndarray]:
        for y0, y1, x0, x1 in _boxes(shape, chunk):
            tile = np.zeros((chunk, chunk), dtype=dtype)
            tile[: y1 - y0, : x1 - x0] = blocks(y0, y1, x0, x1)
            yield tile

    tifffile.imwrite(
        tmp,
        tiles(),
        shape=shape,
        dtype=dtype,
        tile=(chunk, chunk),
        bigtiff=True,
        compression="zlib",
    )
    tmp.replace(path)
    return path


def _boxes(shape: tuple[int, int], chunk: int) -> Iterator[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of a row-major grid of chunk x chunk boxes covering ``shape``."""
    for y0 in range(0, shape[0], chunk):
        for x0 in range(0, shape[1], chunk):
            yield y0, min(y0 + chunk, shape[0]), x0, min(x0 + chunk, shape[1])


def write_blocks(
    path: str | Path,
    shape: tuple[int, int],
    chunk: int,
    dtype: Any,
    blocks: Callable[[int, int, int, int], np.ndarray],
    labels: bool = True,
) -> Path:
    """OME-Zarr for a .zarr path, BigTIFF for .tif/.tiff; anything else is refused."""
    suffix = Path(path).suffix.lower()
    if suffix in ZARR_SUFFIXES:
        return write_ome_zarr(path, shape, chunk, dtype, blocks, labels)
    if suffix in TIFF_SUFFIXES:
        return write_bigtiff(path, shape, chunk, dtype, blocks)
    raise InputError(f"{path}: big outputs are written as .zarr (OME-Zarr) or .tif (BigTIFF)")
