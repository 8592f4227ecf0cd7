"""Exact chunked prediction of images bigger than memory, with instance ids stitched
across chunk borders.

A (Y, X) image is cut into square chunks. Each chunk reads its region grown by a halo of
real neighbouring pixels (mirroring happens only at the image border, inside
`tiling.predict_tiled`), and every region starts on the network's pooling grid, so the
chunk's probabilities equal the whole-image `tiling.predict_tiled` result. Each chunk is
labelled on its region grown by ``overlap`` px; the labels it sees one pixel outside its
border are matched with the neighbour's own labels there, and touching ids are merged
(union-find), so a cell crossing a border or corner keeps one id. Small objects are
removed after merging. A chunk's work is written at once (zarr + a marker file), so a
re-run skips finished chunks; `distributed.py` runs the same `run_chunk` on dask workers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core import postprocess
from napari_unet.core.events import Done
from napari_unet.core.io import InputError
from napari_unet.core.normalize import PERCENTILES, normalize
from napari_unet.core.predict import PredictConfig

DEFAULT_CHUNK_PX = 2048  # chunk edge: a few hundred MB of working memory, ~15% halo
LABEL_OVERLAP_PX = 16  # the labelling sees this far past a chunk (watershed growth, gaps)
SPLIT_OVERLAP_DIAMETERS = 3.0  # and this many cell diameters when cells are split
SAMPLE_PX = 4_000_000  # pixels read to measure the intensity range (all of a small image)
MAX_SAMPLE_CHUNKS = 64  # chunks (evenly spread) those pixels come from
TIFF_TILE_MULTIPLE = 16  # BigTIFF tiles are multiples of 16 px, and chunks are tiles

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (end exclusive)
Index = tuple[int, int]  # chunk row, chunk column


@dataclass(frozen=True)
class ChunkGrid:
    """How a (Y, X) image is cut: chunk edge, input halo and labelling overlap, in pixels."""

    shape: tuple[int, int]
    chunk: int
    halo: int  # context the network needs past the region it predicts (>= margin + pool)
    overlap: int  # the labelling of a chunk sees this far past it

    @property
    def counts(self) -> tuple[int, int]:
        return (math.ceil(self.shape[0] / self.chunk), math.ceil(self.shape[1] / self.chunk))

    def indices(self) -> list[Index]:
        return [(iy, ix) for iy in range(self.counts[0]) for ix in range(self.counts[1])]

    def box(self, index: Index) -> Box:
        y0, x0 = index[0] * self.chunk, index[1] * self.chunk
        return y0, min(y0 + self.chunk, self.shape[0]), x0, min(x0 + self.chunk, self.shape[1])

    def grow(self, box: Box, px: int) -> Box:
        """``box`` grown by ``px`` on every side, clipped to the image."""
        y0, y1, x0, x1 = box
        h, w = self.shape
        return max(y0 - px, 0), min(y1 + px, h), max(x0 - px, 0), min(x1 + px, w)

    def owner(self, y: int, x: int) -> Index:
        return y // self.chunk, x // self.chunk


def plan(
    net: Any,
    shape: tuple[int, int],
    chunk_px: int = DEFAULT_CHUNK_PX,
    diameter_px: float | None = None,
) -> ChunkGrid:
    """Chunks of about ``chunk_px`` aligned to the pooling grid (and to BigTIFF tiles).

    The labelling overlap covers ``SPLIT_OVERLAP_DIAMETERS`` cell diameters when cells are
    split (``diameter_px``): a cell cut by the labelled region's edge must not get a seed
    of its own there, or two chunks would split it differently.
    """
    from napari_unet.core import tiling

    step = tiling.pool_factor(net)
    align = math.lcm(step, TIFF_TILE_MULTIPLE)
    chunk = max(align, int(chunk_px) // align * align)
    halo = step * math.ceil((tiling.margin_px(net) + step) / step)
    reach = max(LABEL_OVERLAP_PX, SPLIT_OVERLAP_DIAMETERS * (diameter_px or 0.0))
    overlap = step * math.ceil(reach / step)
    return ChunkGrid((int(shape[0]), int(shape[1])), chunk, halo, overlap)


def channel_axis(shape: tuple[int, ...], channels: int, name: str = "image") -> int | None:
    """Where the channels are in a (Y, X), (C, Y, X) or (Y, X, C) image; stacks are refused."""
    from napari_unet.core.predict import stack_layout

    layout = stack_layout(shape, channels, name)
    if layout.is_stack:
        raise InputError(
            f"{name}: chunked prediction takes one 2D image (Y, X) or (C, Y, X); got shape "
            f"{tuple(shape)}. Predict stacks slice by slice (without --workers / .zarr output)."
        )
    return layout.channel_axis


def spatial_shape(shape: tuple[int, ...], axis: int | None) -> tuple[int, int]:
    return tuple(shape) if axis is None else (tuple(shape[1:]) if axis == 0 else tuple(shape[:2]))


def read_region(image: Any, axis: int | None, box: Box, name: str = "image") -> np.ndarray:
    """float32 (C, h, w) of one region; only that region of a lazy array is read."""
    y0, y1, x0, x1 = box
    if axis is None:
        block = np.asarray(image[y0:y1, x0:x1])[None]
    elif axis == 0:
        block = np.asarray(image[:, y0:y1, x0:x1])
    else:
        block = np.moveaxis(np.asarray(image[y0:y1, x0:x1, :]), -1, 0)
    block = block.astype(np.float32)
    if not np.isfinite(block).all():
        raise InputError(f"{name}: NaN or infinite values in rows {y0}-{y1}, columns {x0}-{x1}")
    return block


def sample_ranges(
    image: Any, axis: int | None, grid: ChunkGrid, percentiles=PERCENTILES, name: str = "image"
) -> tuple[tuple[float, float], ...]:
    """Per-channel intensity range at the model's percentiles from at most `SAMPLE_PX` pixels
    of at most `MAX_SAMPLE_CHUNKS` chunks: exactly the whole image's range when it is small."""
    boxes = [grid.box(i) for i in grid.indices()]
    if len(boxes) > MAX_SAMPLE_CHUNKS:
        picks = np.linspace(0, len(boxes) - 1, MAX_SAMPLE_CHUNKS).round().astype(int)
        boxes = [boxes[i] for i in np.unique(picks)]
    area = sum((b[1] - b[0]) * (b[3] - b[2]) for b in boxes)
    stride = max(1, math.ceil(math.sqrt(area / SAMPLE_PX)))
    sample = np.concatenate(
        [_flat(read_region(image, axis, b, name)[:, ::stride, ::stride]) for b in boxes], axis=1
    )
    ranges = []
    for values in sample:
        lo, hi = np.percentile(values, list(percentiles))
        ranges.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return tuple(ranges)


def _flat(block: np.ndarray) -> np.ndarray:
    return block.reshape(block.shape[0], -1)


@dataclass(frozen=True)
class ChunkJob:
    """Everything a worker needs to predict one chunk; small and picklable.

    ``model`` / ``image``: a path (opened once per process, lazily) or the object itself.
    ``work``: folder holding the chunks' local labels, probabilities and done-markers.
    """

    model: Any
    image: Any
    axis: int | None
    work: str
    grid: ChunkGrid
    value_ranges: tuple[tuple[float, float], ...]
    tile_size: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    tta: bool = PredictConfig.tta
    threshold: float = postprocess.THRESHOLD
    split_merged: bool = True
    diameter_px: float | None = None  # for splitting; None: measured per chunk
    foreground: bool = False
    threads: int | None = None  # torch threads per worker process (None: leave as is)
    name: str = "image"
    model_id: str = ""  # what identifies model / image across runs (a path) when they are
    image_id: str = ""  # passed as objects; a re-run reuses finished chunks only if equal

    def fingerprint(self) -> str:
        """Changes whenever a finished chunk could differ (model, image, settings)."""
        skip = ("model", "image", "work", "threads", "name", "model_id", "image_id")
        parts = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        for key in ("model", "image"):
            ref = getattr(self, f"{key}_id") or getattr(self, key)
            parts[key] = _file_id(ref) if isinstance(ref, str | Path) else f"in-memory {id(ref)}"
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _file_id(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        return f"{path.resolve()}"
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


_LOAD_LOCK = threading.Lock()  # threaded workers of one process share one load


def _load_model(path: str) -> Any:
    """One model load per worker process, however many chunks (and threads) predict."""
    with _LOAD_LOCK:
        return _cached_model(path)


@functools.lru_cache(maxsize=2)
def _cached_model(path: str) -> Any:
    from napari_unet.core import checkpoint

    return checkpoint.load(path)[0].eval()


@functools.lru_cache(maxsize=4)
def _open_image(path: str) -> Any:
    from napari_unet.core import bigio

    return bigio.open_image(path)


def _resolve(job: ChunkJob) -> tuple[Any, Any]:
    net = _load_model(str(job.model)) if isinstance(job.model, str | Path) else job.model
    image = _open_image(str(job.image)) if isinstance(job.image, str | Path) else job.image
    return net, image


def _marker(work: str | Path, index: Index) -> Path:
    return Path(work) / "markers" / f"{index[0]}_{index[1]}.npz"


def is_done(job: ChunkJob, index: Index) -> bool:
    return _marker(job.work, index).is_file()


def pending(job: ChunkJob) -> list[Index]:
    """Chunks without a done-marker (all of them on a fresh run)."""
    return [i for i in job.grid.indices() if not is_done(job, i)]


def prepare_work(job: ChunkJob) -> None:
    """Create the work folder and its zarr arrays, or keep them when an earlier run of the
    same job (same fingerprint) left finished chunks there."""
    from napari_unet.core import bigio

    work = Path(job.work)
    stamp = work / "job.json"
    fingerprint = job.fingerprint()
    if stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        return
    shutil.rmtree(work, ignore_errors=True)
    (work / "markers").mkdir(parents=True)
    grid = job.grid
    bigio.create_zarr(work / "labels.zarr", grid.shape, grid.chunk, np.uint32)
    if job.foreground:
        bigio.create_zarr(work / "foreground.zarr", grid.shape, grid.chunk, np.float32)
    stamp.write_text(json.dumps({"fingerprint": fingerprint}))


def predict_region(job: ChunkJob, net: Any, image: Any, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities over ``box``, raw intensities over ``box``): the network sees ``box``
    grown by the halo of real pixels, so the probabilities are the whole-image prediction's."""
    from napari_unet.core import tiling

    grid = job.grid
    source = grid.grow(box, grid.halo)
    raw = read_region(image, job.axis, source, job.name)
    x = np.stack([normalize(raw[c], value_range=r) for c, r in enumerate(job.value_ranges)])
    y0, y1, x0, x1 = (
        box[0] - source[0],
        box[1] - source[0],
        box[2] - source[2],
        box[3] - source[2],
    )
    # Only ``box`` is predicted; the halo is context (the tiles start on ``box``'s corner,
    # which lies on the pooling grid).
    probabilities = tiling.predict_tiled(
        net,
        x,
        job.tile_size,
        job.batch_size,
        _device(job.device),
        tta=job.tta,
        region=(y0, x0, y1, x1),
    )
    return probabilities, raw[:, y0:y1, x0:x1]


@functools.lru_cache(maxsize=4)
def _device(name: str) -> Any:
    from napari_unet.core.device import resolve_device

    return resolve_device(name)


def run_chunk(job: ChunkJob, index: Index) -> Index:
    """Predict, label and store one chunk, then write its done-marker (last, atomically)."""
    import zarr

    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    net, image = _resolve(job)
    grid = job.grid
    box = grid.box(index)
    seen = grid.grow(box, grid.overlap)
    probabilities, raw = predict_region(job, net, image, seen)
    seen_labels = postprocess.to_instances(
        probabilities,
        threshold=job.threshold,
        min_size=1,
        split_merged=job.split_merged,
        diameter_px=job.diameter_px,
    ).astype(np.uint32)
    oy, ox = box[0] - seen[0], box[2] - seen[2]
    inner = (slice(oy, oy + box[1] - box[0]), slice(ox, ox + box[3] - box[2]))
    labels = seen_labels[inner]
    n = int(seen_labels.max())
    work = Path(job.work)
    zarr.open_array(str(work / "labels.zarr"), mode="r+")[box[0] : box[1], box[2] : box[3]] = (
        labels
    )
    if job.foreground:
        zarr.open_array(str(work / "foreground.zarr"), mode="r+")[
            box[0] : box[1], box[2] : box[3]
        ] = probabilities[1][inner]
    flat = labels.ravel()
    sums = [np.bincount(flat, weights=c[inner].ravel(), minlength=n + 1) for c in raw]
    rings = _rings(seen_labels, grid, box, seen)
    marker = _marker(work, index)
    tmp = marker.with_name(f".{marker.stem}.partial.npz")
    np.savez(
        tmp,
        n=n,
        areas=np.bincount(flat, minlength=n + 1),
        sums=np.stack(sums),
        edge_top=labels[0],
        edge_bottom=labels[-1],
        edge_left=labels[:, 0],
        edge_right=labels[:, -1],
        **rings,
    )
    tmp.replace(marker)
    return index


def _rings(seen_labels: np.ndarray, grid: ChunkGrid, box: Box, seen: Box) -> dict:
    """The chunk's own view of the 1-px lines just outside it (top/bottom include corners)."""
    y0, y1, x0, x1 = box
    h, w = grid.shape
    xa, xb = max(x0 - 1, 0), min(x1 + 1, w)
    rows = slice(y0 - seen[0], y1 - seen[0])
    cols = slice(xa - seen[2], xb - seen[2])
    empty = np.zeros(0, np.uint32)
    return {
        "ring_top": seen_labels[y0 - 1 - seen[0], cols] if y0 > 0 else empty,
        "ring_bottom": seen_labels[y1 - seen[0], cols] if y1 < h else empty,
        "ring_left": seen_labels[rows, x0 - 1 - seen[2]] if x0 > 0 else empty,
        "ring_right": seen_labels[rows, x1 - seen[2]] if x1 < w else empty,
    }


@dataclass(frozen=True)
class CellStats:
    """Per cell (id 1..n, index 0 unused): area in pixels, mean raw intensity per channel."""

    areas: np.ndarray
    mean_intensity: np.ndarray  # (channels, n + 1)

    @property
    def count(self) -> int:
        return len(self.areas) - 1

    def summary(self) -> dict[str, float]:
        """Cell count, mean area, mean (over cells) of each channel's mean intensity."""
        row: dict[str, float] = {"cells": self.count}
        row["mean_area_px"] = float(self.areas[1:].mean()) if self.count else float("nan")
        for c, means in enumerate(self.mean_intensity):
            row[f"mean_intensity_c{c}"] = float(means[1:].mean()) if self.count else float("nan")
        return row

    @classmethod
    def of(cls, labels: np.ndarray, image_chw: np.ndarray) -> CellStats:
        """From in-memory labels (Y, X) and the raw (C, Y, X) image."""
        flat = labels.ravel()
        n = int(labels.max()) if labels.size else 0
        areas = np.bincount(flat, minlength=n + 1)
        sums = np.stack([np.bincount(flat, weights=c.ravel(), minlength=n + 1) for c in image_chw])
        return cls(areas, sums / np.maximum(areas, 1))


@dataclass(frozen=True)
class Stitching:
    """Maps every chunk's local ids to final ids: ``lut[offset[chunk] + local]``."""

    offsets: dict[Index, int]
    lut: np.ndarray
    stats: CellStats

    def relabel(self, index: Index, local: np.ndarray) -> np.ndarray:
        ids = np.where(local > 0, local.astype(np.int64) + self.offsets[index], 0)
        return self.lut[ids]


def stitch(job: ChunkJob, min_size: int = postprocess.MIN_SIZE_PX) -> Stitching:
    """Merge ids that touch across chunk borders (as each chunk saw past its border),
    drop merged objects below ``min_size`` px, number the rest 1..n in chunk order."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    grid = job.grid
    markers = {i: dict(np.load(_marker(job.work, i))) for i in grid.indices()}
    offsets, total = {}, 0
    for index in grid.indices():
        offsets[index] = total
        total += int(markers[index]["n"])
    areas = np.zeros(total + 1, np.int64)
    channels = len(job.value_ranges)
    sums = np.zeros((channels, total + 1))
    pairs = []
    for index, m in markers.items():
        start = offsets[index]
        areas[start + 1 : start + 1 + int(m["n"])] = m["areas"][1:]
        sums[:, start + 1 : start + 1 + int(m["n"])] = m["sums"][:, 1:]
        for own, other in _ring_pairs(grid, index, markers, offsets):
            keep = (own > 0) & (other > 0)
            pairs.append(np.stack([own[keep] + start, other[keep]]))
    edges = np.concatenate(pairs, axis=1) if pairs else np.zeros((2, 0), np.int64)
    graph = coo_matrix((np.ones(edges.shape[1]), (edges[0], edges[1])), shape=(total + 1,) * 2)
    _, component = connected_components(graph, directed=False)
    comp_area = np.bincount(component, weights=areas)
    keep = comp_area >= max(int(min_size), 1)
    keep[component[0]] = False  # background
    final = np.zeros(len(keep), np.uint32)
    # Components are numbered in order of their lowest node: chunk order, then local id.
    final[keep] = np.arange(1, int(keep.sum()) + 1)
    lut = final[component]
    n = int(keep.sum())
    cell_area = np.bincount(lut, weights=areas, minlength=n + 1)
    cell_sums = np.stack([np.bincount(lut, weights=s, minlength=n + 1) for s in sums])
    stats = CellStats(cell_area.astype(np.int64), cell_sums / np.maximum(cell_area, 1))
    return Stitching(offsets, lut, stats)


def _ring_pairs(
    grid: ChunkGrid, index: Index, markers: dict, offsets: dict
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(this chunk's local ids, neighbours' global ids) along each of its outer lines."""
    y0, y1, x0, x1 = grid.box(index)
    w = grid.shape[1]
    m = markers[index]
    xa, xb = max(x0 - 1, 0), min(x1 + 1, w)
    if len(m["ring_top"]):
        yield m["ring_top"], _line(grid, markers, offsets, y0 - 1, xa, xb, "edge_bottom")
    if len(m["ring_bottom"]):
        yield m["ring_bottom"], _line(grid, markers, offsets, y1, xa, xb, "edge_top")
    if len(m["ring_left"]):
        n = grid.owner(y0, x0 - 1)
        yield m["ring_left"], _global(markers[n]["edge_right"], offsets[n])
    if len(m["ring_right"]):
        n = grid.owner(y0, x1)
        yield m["ring_right"], _global(markers[n]["edge_left"], offsets[n])


def _line(grid, markers, offsets, y: int, xa: int, xb: int, edge: str) -> np.ndarray:
    """Neighbours' global ids along row ``y``, columns xa..xb (their top or bottom edges)."""
    parts = []
    x = xa
    while x < xb:
        n = grid.owner(y, x)
        _, _, nx0, nx1 = grid.box(n)
        end = min(nx1, xb)
        parts.append(_global(markers[n][edge][x - nx0 : end - nx0], offsets[n]))
        x = end
    return np.concatenate(parts)


def _global(local: np.ndarray, offset: int) -> np.ndarray:
    return np.where(local > 0, local.astype(np.int64) + offset, 0)


def run_local(job: ChunkJob) -> Generator[Done, None, None]:
    """Run the chunks still to do in this process; yields (done, total) chunks."""
    todo = pending(job)
    total = len(job.grid.indices())
    done = total - len(todo)
    yield Done(done, total)
    for index in todo:
        run_chunk(job, index)
        done += 1
        yield Done(done, total)


def zarr_array(job: ChunkJob, name: str = "labels") -> Any:
    """The work folder's local ``labels`` (per-chunk ids) or ``foreground`` array."""
    import zarr

    return zarr.open_array(str(Path(job.work) / f"{name}.zarr"), mode="r")


def finish(
    job: ChunkJob,
    labels_path: str | Path | None,
    foreground_path: str | Path | None = None,
    min_size: int = postprocess.MIN_SIZE_PX,
    keep_work: bool = False,
) -> Stitching:
    """Stitch the chunks and write the outputs chunk by chunk (OME-Zarr or BigTIFF)."""

    from napari_unet.core import bigio

    missing = pending(job)
    if missing:
        raise InputError(f"{len(missing)} chunk(s) are not predicted yet, e.g. {missing[0]}")
    stitching = stitch(job, min_size)
    grid = job.grid
    local = zarr_array(job)

    def labels_block(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return stitching.relabel(grid.owner(y0, x0), np.asarray(local[y0:y1, x0:x1]))

    if labels_path is not None:
        bigio.write_blocks(labels_path, grid.shape, grid.chunk, np.uint32, labels_block)
    if foreground_path is not None:
        fg = zarr_array(job, "foreground")
        bigio.write_blocks(
            foreground_path,
            grid.shape,
            grid.chunk,
            np.float32,
            lambda y0, y1, x0, x1: np.asarray(fg[y0:y1, x0:x1]),
            labels=False,
        )
    if not keep_work:
        shutil.rmtree(job.work, ignore_errors=True)
    return stitching


def assemble(job: ChunkJob, stitching: Stitching) -> np.ndarray:
    """The stitched labels as one in-memory array (tests and small images only)."""
    local = zarr_array(job)
    out = np.zeros(job.grid.shape, np.uint32)
    for index in job.grid.indices():
        y0, y1, x0, x1 = job.grid.box(index)
        out[y0:y1, x0:x1] = stitching.relabel(index, np.asarray(local[y0:y1, x0:x1]))
    return out
