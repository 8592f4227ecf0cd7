"""Predict many files (a folder, a glob, a plate) or one big file, with one model load.

Each input gets one labels file in the output folder and a row in ``summary.csv`` (cell
count, mean area, mean intensity per channel). Finished outputs are skipped on a re-run;
a file that cannot be read is reported and skipped, the rest still run. Big 2D images
(or any image on a dask cluster, or a .zarr output) go through `chunked` with bounded
memory; small ones through `predict.predict_stack`, read lazily slice by slice.
"""

from __future__ import annotations

import csv
import glob
import math
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core import bigio, chunked, postprocess
from napari_unet.core.io import InputError
from napari_unet.core.normalize import PERCENTILES
from napari_unet.core.predict import PredictConfig

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy", ".zarr")
SUMMARY_NAME = "summary.csv"


@dataclass(frozen=True)
class FileStarted:
    index: int  # 0-based position in the list of inputs
    total: int
    path: Path


@dataclass(frozen=True)
class FileDone:
    """One input finished (``summary``), skipped as already done, or failed (``error``)."""

    index: int
    total: int
    path: Path
    output: Path
    summary: dict | None = None
    skipped: bool = False
    error: str | None = None
    # the shipped starter that predicted this file instead of the one chosen, whose
    # channels did not fit it (`models.colour_counterpart`)
    switched_to: str | None = None


@dataclass(frozen=True)
class Options:
    """How to run one input: prediction settings, chunking, and where chunks run."""

    config: PredictConfig = PredictConfig()
    chunk_px: int = chunked.DEFAULT_CHUNK_PX
    chunked_above_px: int | None = None  # default: twice a chunk's pixels
    client: Any = None  # a dask.distributed Client, or None: this process
    probabilities: bool = False  # also write "<name>_probability<suffix>"
    # `core.axes` letters (e.g. "TZCYX", "YXC") and channel indices; None: guessed / all.
    # Only in-memory prediction reads them: chunked (big 2D) images must be plain.
    axes: str | None = None
    channels: tuple[int, ...] | None = None


def expand_inputs(spec: str | Path) -> list[Path]:
    """A file, a .zarr folder, a folder of images, or a glob pattern -> sorted image paths."""
    path = Path(spec)
    if path.is_dir() and path.suffix.lower() != ".zarr":
        found = [p for p in path.iterdir() if _is_image(p)]
    elif glob.has_magic(str(spec)):
        found = [Path(p) for p in glob.glob(str(spec)) if _is_image(Path(p))]
    else:
        return [path]
    if not found:
        raise InputError(f"{spec}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return sorted(found)


def is_many(spec: str | Path) -> bool:
    """A folder or a pattern: one output per file in an output folder."""
    path = Path(spec)
    return (path.is_dir() and path.suffix.lower() != ".zarr") or glob.has_magic(str(spec))


def _is_image(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def output_path(image: Path, out_dir: Path, suffix: str, kind: str = "labels") -> Path:
    stem = image.name
    for ending in (".ome.zarr", ".ome.tif", ".ome.tiff", *IMAGE_SUFFIXES):
        if stem.lower().endswith(ending):
            stem = stem[: -len(ending)]
            break
    return out_dir / f"{stem}_{kind}{suffix}"


def predict_file(
    model: Any,
    path: str | Path,
    output: str | Path,
    options: Options = Options(),
    probabilities: str | Path | None = None,
    model_file: str | Path | None = None,
) -> Generator[Any, None, dict]:
    """Predict one file into ``output``; yields progress events, returns its summary row.

    ``model``: a model file or a loaded (net, metadata) pair, as `predict.prediction_job`
    takes; ``model_file``: the file cluster workers load when ``model`` is a pair.
    """
    from napari_unet.core import checkpoint, io, predict

    path, output = Path(path), Path(output)
    image = bigio.open_image(path)
    if isinstance(model, tuple):
        architecture = model[0].config
    else:
        architecture = checkpoint.read_metadata(model)["architecture"]
        model_file = model
    channels = int(architecture.get("in_channels", 1))
    above = options.chunked_above_px or 2 * options.chunk_px**2  # bounded memory above this
    custom = options.axes not in (None, "YX") or options.channels is not None
    if custom:
        from napari_unet.core import axes as axes_

        found = axes_.parse(options.axes, image.shape, channels, str(path))
        big = found.size("Y") * found.size("X") > above
    else:
        big = _spatial_px(image.shape, channels, path) > above
    if options.client is not None or bigio.is_zarr(output) or big:
        if custom:
            raise InputError(
                f"{path}: --axes/--channels work in memory only; this image is predicted "
                "chunk by chunk (big, .zarr output or a dask cluster). Save it as a plain "
                "(Y, X) / (C, Y, X) image with the channels you want, or predict to .tif "
                "without --workers/--scheduler."
            )
        net, metadata = model if isinstance(model, tuple) else checkpoint.load(model)
        return (
            yield from _predict_chunked(
                net, metadata, model_file, path, image, output, options, probabilities
            )
        )
    result = yield from predict.prediction_job(
        model,
        image,
        options.config,
        axes=options.axes,
        channels=options.channels,
        keep_foreground=probabilities is not None,
        name=str(path),
    )
    io.write(output, result.labels)
    if probabilities is not None:
        io.write(probabilities, result.foreground)
    labels = result.labels
    if custom:  # (T, Z, C, Y, X) -> (N, C, Y, X), labels in the same (T, Z) order
        x = axes_.to_tzcyx(np.asarray(image), found)
        raw = x.reshape(-1, *x.shape[2:])
        labels = axes_.labels_to_tzyx(labels, found)
    else:
        raw = io.as_image(np.asarray(image), str(path), channels)  # (N, C, Y, X)
    stats = chunked.CellStats.of(labels, np.moveaxis(raw, 1, 0).reshape(raw.shape[1], -1))
    return stats.summary()


def _spatial_px(shape: tuple[int, ...], channels: int, path: Path) -> int:
    from napari_unet.core.predict import stack_layout

    return math.prod(stack_layout(shape, channels, str(path)).spatial_shape)


def _predict_chunked(
    net, metadata, model_ref, path, image, output, options, probabilities
) -> Generator[Any, None, dict]:
    from napari_unet.core import distributed

    for target in (output, probabilities):
        if target is not None and Path(target).suffix.lower() not in (".zarr", ".tif", ".tiff"):
            raise InputError(
                f"{target}: {path} is predicted chunk by chunk, so it is written as .zarr "
                "(OME-Zarr) or .tif (BigTIFF)"
            )
    axis = chunked.channel_axis(image.shape, int(net.config["in_channels"]), str(path))
    config = options.config
    diameter = postprocess.cell_diameter(metadata) if config.split_merged else None
    grid = chunked.plan(net, chunked.spatial_shape(image.shape, axis), options.chunk_px, diameter)
    percentiles = metadata.get("normalisation", {}).get("percentiles", PERCENTILES)
    ranges = chunked.sample_ranges(image, axis, grid, percentiles, str(path))
    client = options.client
    if client is not None and model_ref is None:
        raise InputError("A dask cluster needs the model as a file: save the model first.")
    job = chunked.ChunkJob(
        model=str(model_ref) if client is not None else net,
        image=str(path.resolve()) if client is not None else image,
        axis=axis,
        work=str(output.with_name(f".{output.name}.chunks")),
        grid=grid,
        value_ranges=ranges,
        tile_size=config.tile_size,
        batch_size=config.batch_size,
        device=config.device,
        tta=config.tta,
        threshold=config.threshold,
        split_merged=config.split_merged,
        diameter_px=diameter,
        foreground=probabilities is not None,
        threads=distributed.threads_per_worker(client) if client is not None else None,
        name=str(path),
        model_id=str(model_ref or ""),
        image_id=str(path.resolve()),
    )
    chunked.prepare_work(job)
    yield from (
        distributed.run_chunks(job, client) if client is not None else chunked.run_local(job)
    )
    stitching = chunked.finish(job, output, probabilities, min_size=config.min_size_px)
    return stitching.stats.summary()


def predict_files(
    model: Any,
    inputs: list[Path],
    out_dir: str | Path,
    suffix: str = ".tif",
    options: Options = Options(),
) -> Generator[Any, None, list[FileDone]]:
    """Predict every input into ``out_dir``; yields `FileStarted`, the file's progress
    events and `FileDone`; returns the `FileDone` of each. ``summary.csv`` is rewritten
    after every file, so an interrupted run leaves an accurate summary of what is done.
    ``model``: a model file or a (net, metadata) pair; a file is loaded once, here."""
    from napari_unet.core import checkpoint

    model_file = None if isinstance(model, tuple) else model
    pair = model if isinstance(model, tuple) else checkpoint.load(model)
    other = _Counterpart(model_file, options)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = read_summary(out_dir / SUMMARY_NAME)
    results = []
    for i, path in enumerate(inputs):
        output = output_path(path, out_dir, suffix)
        if output.exists():
            done = FileDone(i, len(inputs), path, output, rows.get(path.name), skipped=True)
        else:
            yield FileStarted(i, len(inputs), path)
            fg = (
                output_path(path, out_dir, suffix, "probability")
                if options.probabilities
                else None
            )
            try:
                use = other.instead_for(path, pair)
                used, used_file = (pair, model_file) if use is None else (use.pair, use.path)
                summary = yield from predict_file(used, path, output, options, fg, used_file)
            except InputError as exc:
                done = FileDone(i, len(inputs), path, output, error=str(exc))
            else:
                model_name = Path(used_file).name if used_file else "this session's model"
                rows[path.name] = {
                    "image": path.name,
                    "labels": output.name,
                    "model": model_name,
                    **summary,
                }
                write_summary(out_dir / SUMMARY_NAME, rows)
                switched = None if use is None else use.title
                done = FileDone(
                    i, len(inputs), path, output, rows[path.name], switched_to=switched
                )
        results.append(done)
        yield done
    return results


class _Counterpart:
    """The other shipped starter (`models.colour_counterpart`), found once and loaded on
    first use, for the files of a folder whose channels the chosen shipped starter cannot
    take: a plate of stained RGB and gray fluorescence images runs in one go."""

    def __init__(self, model_file: str | Path | None, options: Options) -> None:
        from napari_unet.core import checkpoint

        self.shipped = _other_starter(model_file, options)
        self.channels = None if self.shipped is None else checkpoint.in_channels(self.shipped.path)
        self.pair: tuple | None = None

    @property
    def path(self) -> Path:
        return self.shipped.path

    @property
    def title(self) -> str:
        return self.shipped.title

    def instead_for(self, path: Path, pair: tuple) -> _Counterpart | None:
        """Itself when ``path`` does not fit ``pair``'s channels but fits the other's."""
        from napari_unet.core import checkpoint

        if self.shipped is None:
            return None
        own = int(pair[0].config["in_channels"])
        if not _switches(bigio.open_image(path).shape, str(path), own, self.channels):
            return None
        if self.pair is None:
            self.pair = checkpoint.load(self.shipped.path)
        return self


def counterpart_for(
    model_file: str | Path | None,
    shape: tuple[int, ...],
    name: str,
    options: Options = Options(),
    in_channels: int | None = None,
) -> Any:
    """The other shipped starter (`models.colour_counterpart`) when an image of ``shape``
    has channels the chosen shipped starter ``model_file`` cannot take and the other one
    can (a stained RGB image given to the gray nuclei starter, or the reverse); else None.
    Never for a model of the user's own, nor when axes or channels were given by hand.
    ``in_channels``: the chosen model's, when known already."""
    from napari_unet.core import checkpoint

    shipped = _other_starter(model_file, options)
    if shipped is None:
        return None
    own = checkpoint.in_channels(model_file) if in_channels is None else in_channels
    other = checkpoint.in_channels(shipped.path)
    return shipped if _switches(shape, name, own, other) else None


def _other_starter(model_file: str | Path | None, options: Options) -> Any:
    from napari_unet.models import colour_counterpart

    custom = options.axes not in (None, "YX") or options.channels is not None
    return None if model_file is None or custom else colour_counterpart(model_file)


def _switches(shape: tuple[int, ...], name: str, own: int, other: int) -> bool:
    """An image that a model of ``own`` channels cannot take and one of ``other`` can."""
    return not _fits(shape, own, name) and _fits(shape, other, name)


def _fits(shape: tuple[int, ...], in_channels: int, name: str) -> bool:
    """Whether an image of ``shape`` has the channels a model of ``in_channels`` takes."""
    from napari_unet.core.predict import stack_layout

    try:
        stack_layout(shape, in_channels, name)
    except InputError:
        return False
    return True


def read_summary(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {row["image"]: row for row in csv.DictReader(f)}


def write_summary(path: Path, rows: dict[str, dict]) -> None:
    """One row per image (sorted by name), written to a temporary file and renamed."""
    fields: list[str] = []
    for row in rows.values():
        fields += [k for k in row if k not in fields]
    tmp = path.with_name(f".{path.name}.partial")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for name in sorted(rows):
            writer.writerow(rows[name])
    tmp.replace(path)
