"""`napari-unet` command line: the same core as the docks, with tqdm progress bars.

Each subcommand is one small function. Bad input exits with code 2 and one line on
stderr (no traceback); see `InputError`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Generator
from typing import Any

from napari_unet import __version__
from napari_unet.core.io import InputError
from napari_unet.core.presets import (
    ADAMW,
    ANCHOR,
    AUTO,
    DEFAULT_LR,
    DEVICES,
    MODEL_PRESETS,
    OPTIMIZERS,
    PAPER,
    SGD,
    default_preset,
)
from napari_unet.models import SHIPPED


def drive(
    events: Generator[Any, Any, Any],
    total: int | None,
    desc: str,
    on_event: Callable[[Any, Any], None] | None = None,
) -> Any:
    """Pull a core generator to its end under a tqdm bar; returns the generator's return value.

    The bar opens at the first event, so input errors found before any work print alone.
    ``on_event(event, bar)`` may update the bar's postfix (loss, IoU, ...).
    """
    from tqdm import tqdm

    from napari_unet.core.events import run_to_end

    bar = None

    def handle(event: Any) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr)
        if on_event is None:
            bar.update(1)
        else:
            on_event(event, bar)

    try:
        return run_to_end(events, handle)
    finally:
        if bar is not None:
            bar.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-unet",
        description="U-Net (Ronneberger et al. 2015) for cell segmentation, headless.",
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, add_arguments, run in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"napari-unet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-unet {args.command}: interrupted", file=sys.stderr)
        return 130


# --- subcommands -------------------------------------------------------------------
# One section per feature: `_add_<name>(parser)` declares its arguments, `_cmd_<name>(args)`
# runs it and returns the exit code. Import torch-heavy modules inside `_cmd_<name>`.


def _model_file(value: str) -> str:
    """A model argument: a file, or the key of a shipped model ('starter', 'phase',
    'stained') when no file of that name is here."""
    from pathlib import Path

    from napari_unet.models import shipped_by_key

    shipped = shipped_by_key(value)
    return str(shipped.path) if shipped is not None and not Path(value).exists() else value


SHIPPED_HELP = ", ".join(f"'{m.key}'" for m in SHIPPED) + ": a shipped starter"
# 'starter': the shipped starter model; 'phase': the shipped phase-contrast starter; ...
SHIPPED_EACH = "; ".join(f"'{m.key}': the shipped {m.title.lower()}" for m in SHIPPED)


def _add_device(p: argparse.ArgumentParser) -> None:
    # no choices=: "cuda:1" picks a GPU (`device.resolve_device` checks the name)
    p.add_argument("--device", default=AUTO, help=f"{', '.join(DEVICES)} (default: %(default)s)")


def _add_weights(p: argparse.ArgumentParser) -> None:
    from napari_unet.core.weights import SIGMA_PX, W0

    p.add_argument("labels", help="instance labels (tif, png, npy): 2D or a (Z, Y, X) stack")
    p.add_argument("-o", "--output", required=True, help="weight map to write (.tif or .npy)")
    p.add_argument("--w0", type=float, default=W0, help="border weight (default: %(default)s)")
    p.add_argument(
        "--sigma", type=float, default=SIGMA_PX, help="border width, pixels (default: %(default)s)"
    )
    p.add_argument("--no-balance", action="store_true", help="class weight 1 instead of balanced")
    p.add_argument("--target", help="also write the separated training target here")


def _cmd_weights(args: argparse.Namespace) -> int:
    from napari_unet.core import io, weights

    labels = io.as_labels(io.read(args.labels), name=args.labels)
    n_slices = 1 if labels.ndim == 2 else labels.shape[0]
    maps = drive(
        weights.weight_maps_iter(labels, args.w0, args.sigma, balance=not args.no_balance),
        total=n_slices,
        desc="weight map",
    )
    io.write(args.output, maps.weights)
    if args.target:
        io.write(args.target, maps.target)
    return 0


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("prediction", help="predicted instance labels (tif, png, npy)")
    p.add_argument("ground_truth", help="ground-truth instance labels of the same shape")
    p.add_argument("--json", metavar="OUT.json", help="also write the metrics as JSON")
    p.add_argument("--no-warping", action="store_true", help="skip the (slowest) warping error")
    p.add_argument(
        "--axes",
        help="ZYX (default for 3D: also scores 3D objects) or TYX (a time-lapse: per frame)",
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from napari_unet.core import axes, io, metrics

    pred = io.as_labels(io.read(args.prediction), name=args.prediction)
    gt = io.as_labels(io.read(args.ground_truth), name=args.ground_truth)
    if pred.shape != gt.shape:
        raise io.InputError(
            f"prediction {args.prediction!r} has shape {pred.shape} but ground truth "
            f"{args.ground_truth!r} has {gt.shape}: compare labels of the same image."
        )
    n_slices = 1 if gt.ndim == 2 else int(gt.reshape(len(gt), -1).any(axis=1).sum())
    volume = axes.parse(args.axes, gt.shape, name=args.ground_truth).is_z_stack
    result = drive(
        metrics.evaluate_iter(gt, pred, warping=not args.no_warping, volume=volume),
        n_slices,
        "evaluate",
    )
    print(metrics.format_table(result.metrics))
    if args.json:
        finite = {k: None if v != v else v for k, v in result.metrics.items()}  # NaN -> null
        Path(args.json).write_text(json.dumps(finite, indent=2) + "\n")
    return 0


def _add_predict(p: argparse.ArgumentParser) -> None:
    from napari_unet.core.postprocess import MIN_SIZE_PX, THRESHOLD
    from napari_unet.core.predict import PredictConfig
    from napari_unet.core.stitch import STITCH_THRESHOLD

    p.add_argument(
        "model",
        type=_model_file,
        help=f"model file (.safetensors) or bioimage.io package (.zip); {SHIPPED_HELP}",
    )
    p.add_argument(
        "image",
        help="image (tif, png, npy, zarr/OME-Zarr): 2D or a (Z, Y, X) / (T, Y, X) stack; "
        "or a folder or a quoted glob ('plate/*.tif') for many images",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="labels to write (.tif, .npy, .zarr = OME-Zarr); a folder for many images",
    )
    p.add_argument("--tile-size", type=int, help="input tile edge, pixels (default: from memory)")
    p.add_argument("--batch-size", type=int, help="tiles per forward pass (default: from memory)")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=PredictConfig.tta,
        help="average the 8 flips/rotations (default: on; +0.02-0.05 AP@0.5 on real "
        "images; --no-tta predicts ~5x faster on a CPU)",
    )
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="cell probability cut-off")
    p.add_argument("--min-size", type=int, default=MIN_SIZE_PX, help="smallest cell kept, pixels")
    p.add_argument(
        "--split-merged",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="split fused cells by a watershed of the distance transform (default: on)",
    )
    p.add_argument(
        "--probabilities",
        metavar="P.tif",
        nargs="?",
        const="",
        help="also write the cell probability (many images: NAME_probability files)",
    )
    _add_axes(p)
    p.add_argument(
        "--stitch-threshold",
        type=float,
        help=f"Z stacks: link objects of neighbouring slices overlapping at least this much "
        f"into 3D objects; 0 = off (default: {STITCH_THRESHOLD} when the axes have Z, "
        "0 for time-lapses)",
    )
    _add_device(p)
    p.add_argument(
        "--confidence",
        metavar="OBJECTS.csv",
        help="also score every object: id, confidence (higher = more likely right), area, "
        "reason, ... (predicts 8 flips/rotations, 8x slower)",
    )
    p.add_argument("--uncertainty", metavar="U.tif", help="with --confidence: the uncertainty map")
    p.add_argument(
        "--uncertainty-method",
        choices=("tta", "dropout"),
        default="tta",
        help="flips/rotations or Monte-Carlo dropout (default: %(default)s)",
    )
    p.add_argument(
        "--reference", metavar="LABELS", help="annotated cells: what plausible size/shape is"
    )
    _add_big(p)


def _add_axes(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--axes",
        help="the image's axes, letters of TZCYX ending in YX or YXC, e.g. TZCYX, ZYX, TYX, "
        "YXC (default: guessed from the shape: YX, ZYX, RGB as YXC)",
    )
    p.add_argument("--channels", help="channel numbers to use, in order, e.g. 0,1 (default: all)")


def _cmd_predict(args: argparse.Namespace) -> int:
    from napari_unet.core import axes, batch, bigio, checkpoint, io, predict
    from napari_unet.core.stitch import STITCH_THRESHOLD

    if args.uncertainty and not args.confidence:
        raise InputError("--uncertainty needs --confidence OBJECTS.csv")
    reference = None
    if args.reference:
        from napari_unet.core import confidence

        reference = confidence.reference_from(
            io.as_labels(io.read(args.reference), args.reference)
        )
    # a bad model file fails before any progress bar
    in_channels = checkpoint.in_channels(args.model)
    first = batch.expand_inputs(args.image)[0]  # many images: the first one's axes decide
    shape = bigio.open_image(first).shape
    channels = axes.parse_channels(args.channels)
    if not batch.is_many(args.image):  # a folder switches per file (`batch.predict_files`)
        by_hand = batch.Options(axes=args.axes, channels=channels and tuple(channels))
        other = batch.counterpart_for(args.model, shape, str(first), by_hand, in_channels)
        if other is not None:
            print(
                f"napari-unet predict: {first} has other channels than the model chosen: "
                f"predicting with the {other.title}",
                file=sys.stderr,
            )
            args.model, in_channels = str(other.path), checkpoint.in_channels(other.path)
    found = axes.parse(args.axes, shape, in_channels, name=str(first))
    stitch_threshold = args.stitch_threshold
    if stitch_threshold is None:
        stitch_threshold = STITCH_THRESHOLD if found.is_z_stack else 0.0
    config = predict.PredictConfig(
        tile_size=args.tile_size,
        batch_size=args.batch_size,
        device=args.device,
        tta=args.tta,
        threshold=args.threshold,
        min_size_px=args.min_size,
        split_merged=args.split_merged,
        stitch_threshold=stitch_threshold,
        confidence=args.uncertainty_method if args.confidence else None,
    )
    if args.confidence:
        return _predict_with_confidence(args, config, reference, found.order, channels)
    # without --axes each file's axes are guessed; a channel count other than the
    # model's goes through `core.axes` (it picks the channels the model was trained on)
    order = args.axes or (found.order if found.channels != in_channels else None)
    return _predict_big(args, config, order, channels)


def _predict_with_confidence(
    args: argparse.Namespace,
    config: Any,
    reference: Any,
    order: str | None = None,
    channels: list[int] | None = None,
) -> int:
    """One image in memory, scored object by object (8 flips/rotations per tile)."""
    from napari_unet.core import batch, io, predict

    if batch.is_many(args.image) or args.workers or args.scheduler:
        raise InputError("--confidence scores one image at a time, without --workers/--scheduler")
    image = io.read(args.image)
    events = predict.prediction_job(
        args.model,
        image,
        config,
        axes=order,
        channels=channels,
        keep_foreground=args.probabilities is not None,
        name=args.image,
        reference=reference,
    )

    def on_event(event, bar) -> None:
        if isinstance(event, predict.Progress):
            bar.total = event.tiles_total
            bar.n = event.tiles_done
            bar.refresh()

    result = drive(events, None, "predict (tiles)", on_event)
    io.write(args.output, result.labels)
    if args.probabilities:
        io.write(args.probabilities, result.foreground)
    if args.confidence:
        from napari_unet.core import confidence

        confidence.write_csv(args.confidence, result.objects)
        if args.uncertainty:
            io.write(args.uncertainty, result.uncertainty)
    return 0


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "pairs",
        nargs="+",
        metavar="IMAGE LABELS",
        help="image (tif, png, npy; 2D or a (Z, Y, X) stack) and its instance labels of the "
        "same shape (all-zero slices are ignored); more pairs may follow, of any sizes; or "
        "one folder of pairs (images/ + labels/, or NAME.tif + NAME_labels.tif)",
    )
    p.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    p.add_argument(
        "--classes",
        type=int,
        choices=(2, 3),
        help="2: background/cell, 3: + cell border (default: 3; when fine-tuning, the model's)",
    )
    p.add_argument("--steps", type=int, help="optimiser steps (default: by model preset)")
    p.add_argument("--max-minutes", type=float, help="stop early, keep the best (CPU: 8.5)")
    _add_device(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument(
        "--from",
        dest="start",
        type=_model_file,
        metavar="MODEL",
        help=f"fine-tune this model file ({SHIPPED_EACH}; "
        "'auto', the default unless --preset or --classes 2 is given: the shipped starter "
        "that finds the annotated cells best, one that takes the image's channels first)",
    )
    p.add_argument(
        "--preset", choices=MODEL_PRESETS, help=f"train a new model of this size (CUDA: {PAPER})"
    )
    p.add_argument("--tile-size", type=int, help="input tile edge, pixels (rounded to valid)")
    p.add_argument("--batch-size", type=int, help="tiles per step")
    lr = ", ".join(f"{v:g} {k}" for k, v in DEFAULT_LR.items())
    p.add_argument("--lr", type=float, help=f"peak learning rate (default: {lr})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=ADAMW, help=f"{SGD}: paper")
    p.add_argument("--validate-every", type=int, help="steps between validations")
    p.add_argument(
        "--anchor",
        type=float,
        help=f"fine-tuning: pull toward the start model's weights (default {ANCHOR:g}; "
        "0: off; larger: stay closer)",
    )
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    p.add_argument(
        "--background",
        metavar="MASK",
        help="background strokes (non-zero = no cell here), same shape as LABELS",
    )
    p.add_argument(
        "--unpainted",
        choices=("auto", "ignore", "background"),
        default="auto",
        help="unpainted pixels: auto (ignored when only a few cells are painted), always "
        "ignored, or always background",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only)")
    _add_axes(p)


CPU_MAX_MINUTES = 8.5  # the default CPU run ends within 10 min: start, last validation, save


AUTO_START = "auto"  # `train --from auto`: the shipped starter that fits the labels best


def _default_start() -> list[str] | None:
    """Images fine-tune a shipped starter unless told otherwise (--preset, --from,
    --classes 2): on 6 real half-image cases, 2 minutes of training reached AP@0.5 0.85
    from the nuclei starter against 0.76 for a new model. Of the shipped starters (nuclei,
    phase contrast) the one that already finds the annotated cells best is taken
    (`train.choose_start`). On colour / multi-channel images its first layer is spread
    over the channels by their contrast (`model.spread_input_channels`)."""
    from napari_unet.models import shipped_paths

    return shipped_paths() or None


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from napari_unet.core import axes, checkpoint, io, train
    from napari_unet.core.augment import AugmentConfig
    from napari_unet.core.device import resolve_device
    from napari_unet.core.settings import TrainingSettings

    output = Path(args.output)
    if output.suffix != ".safetensors":
        raise io.InputError(f"{output}: a model file ends in .safetensors")
    device = resolve_device(args.device)
    if args.start == AUTO_START:
        args.start = _default_start()
    for start in [args.start] if isinstance(args.start, str) else args.start or []:
        checkpoint.read_metadata(start)  # a bad model file fails before any progress bar
    pairs = []
    paths = io.training_pairs(args.pairs)
    for image_path, labels_path in paths:
        image = io.read(image_path)
        labels = io.as_labels(io.read(labels_path), name=str(labels_path), max_ndim=4)
        found = axes.parse(args.axes, image.shape, name=str(image_path))
        io.check_same_shape(found.labels_shape, labels.shape, image=image_path, labels=labels_path)
        pairs.append((image, labels))
    found = axes.parse(args.axes, pairs[0][0].shape, name=str(paths[0][0]))
    if args.start is None and args.preset is None and args.classes in (None, 3):
        args.start = _default_start()
    max_minutes = args.max_minutes
    if max_minutes is None and device.type != "cuda":
        max_minutes = CPU_MAX_MINUTES
    config = train.TrainConfig(
        steps=args.steps,
        preset=args.preset or default_preset(device),
        tile_size=args.tile_size,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        validate_every=args.validate_every,
        max_minutes=max_minutes,
        device=str(device),
        seed=args.seed,
        augment=None if args.no_augment else AugmentConfig(),
        compile=args.compile,
        anchor=args.anchor,
    )
    result = train.TrainResult()
    (image, labels), *extra = pairs
    background = io.read(args.background) if args.background else None
    if background is not None:
        io.check_same_shape(
            background.shape, labels.shape, image=args.background, labels=str(paths[0][1])
        )
    settings = TrainingSettings(augment=config.augment, unpainted=args.unpainted)
    events = train.training_job(
        image,
        labels,
        config,
        start_from=args.start,
        result=result,
        axes=found.order,
        channels=axes.parse_channels(args.channels),
        background=background,
        training=settings,
        extra_pairs=extra,
        n_classes=args.classes,
    )
    postfix: dict[str, str] = {}

    def on_event(event, bar) -> None:
        if isinstance(event, train.Step):
            bar.total = event.total
            bar.update(1)
            postfix.update(loss=f"{event.loss:.3f}", lr=f"{event.lr:.1e}")
        elif isinstance(event, train.Validation):
            postfix["IoU"] = f"{event.iou:.3f}"
        bar.set_postfix(postfix, refresh=False)

    try:
        trained = drive(events, config.steps, "train", on_event)
    except KeyboardInterrupt:
        events.close()
        trained = result.trained(stopped=True)  # the best model so far
        if trained is None:
            raise
    trained.save(output)
    iou = "" if trained.best_iou is None else f", validation IoU {trained.best_iou:.3f}"
    stop = " (stopped early)" if trained.stopped else ""
    print(
        f"saved {output}: best at step {trained.best_step} of {trained.steps_done}{stop}{iou}",
        file=sys.stderr,
    )
    used = trained.metadata.get("training", {}).get("annotation")
    if used:  # with sparse painting, after the starting model's cell hint
        print(f"trained on: {used}", file=sys.stderr)
    note = trained.note()
    if note:
        print(note, file=sys.stderr)
    return 0


# --- big images, folders and clusters (`core.batch`, `core.chunked`, `core.distributed`)


def _add_big(p: argparse.ArgumentParser) -> None:
    from napari_unet.core.chunked import DEFAULT_CHUNK_PX

    p.add_argument("--workers", type=int, help="run chunks on a local dask cluster of N processes")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run chunks on this dask scheduler")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_PX,
        help="chunk edge for big images, pixels (default: %(default)s)",
    )
    p.add_argument(
        "--format", choices=("tif", "zarr"), default="tif", help="many images: output format"
    )


def _predict_big(
    args: argparse.Namespace,
    config: Any,
    order: str | None = None,
    channels: list[int] | None = None,
) -> int:
    """One file (lazily read; chunked when big) or many files into a folder."""
    import contextlib
    from pathlib import Path

    from tqdm import tqdm

    from napari_unet.core import batch, distributed, predict
    from napari_unet.core.events import Done

    many = batch.is_many(args.image)
    inputs = batch.expand_inputs(args.image)
    if many and Path(args.output).suffix.lower() in (".tif", ".tiff", ".npy", ".png"):
        raise InputError(f"{args.output}: many images are written into a folder; give -o a folder")
    if not many and args.probabilities == "":
        raise InputError("--probabilities needs a file name for one image (e.g. P.tif)")

    def on_event(event, bar) -> None:
        if isinstance(event, predict.Progress | Done):
            done, total = (
                (event.tiles_done, event.tiles_total)
                if isinstance(event, predict.Progress)
                else (event.done, event.total)
            )
            if not many:
                bar.total, bar.n = total, done
            bar.set_postfix_str(f"{Path(current[0]).name} {done}/{total}", refresh=False)
            bar.refresh()
        elif isinstance(event, batch.FileStarted):
            current[0] = event.path
        elif isinstance(event, batch.FileDone):
            bar.update(1)
            if event.error:
                tqdm.write(f"napari-unet predict: skipped {event.path}: {event.error}", sys.stderr)
            elif event.switched_to:
                tqdm.write(
                    f"napari-unet predict: {event.path} has other channels than the model "
                    f"chosen: predicted with the {event.switched_to}",
                    sys.stderr,
                )

    current = [args.image]
    with contextlib.ExitStack() as stack:
        client = None
        if args.workers or args.scheduler:
            client = stack.enter_context(distributed.connect(args.workers, args.scheduler))
        options = batch.Options(
            config,
            chunk_px=args.chunk_size,
            client=client,
            probabilities=args.probabilities is not None,
            axes=order,
            channels=None if channels is None else tuple(channels),
        )
        if not many:
            events = batch.predict_file(
                args.model, inputs[0], args.output, options, args.probabilities
            )
            drive(events, None, "predict", on_event)
            return 0
        suffix = ".ome.zarr" if args.format == "zarr" else ".tif"
        events = batch.predict_files(args.model, inputs, args.output, suffix, options)
        results = drive(events, len(inputs), "predict (files)", on_event)
    failed = [r for r in results if r.error]
    skipped = sum(r.skipped for r in results)
    print(
        f"{len(results) - len(failed) - skipped} predicted, {skipped} already done, "
        f"{len(failed)} failed; summary: {Path(args.output) / batch.SUMMARY_NAME}",
        file=sys.stderr,
    )
    return 1 if failed else 0


def _add_export(p: argparse.ArgumentParser) -> None:
    from napari_unet.core.export import DEFAULT_LICENSE

    p.add_argument(
        "model",
        type=_model_file,
        help=f"model file (.safetensors) or bioimage.io package to export; {SHIPPED_HELP}",
    )
    p.add_argument("-o", "--output", required=True, help="package to write (NAME.zip)")
    p.add_argument("--name", help="model name shown by the model zoo (default: from NAME)")
    p.add_argument("--description", help="one-sentence description")
    p.add_argument("--author", action="append", help="author name (repeat for several)")
    p.add_argument("--license", default=DEFAULT_LICENSE, help="SPDX id (default: %(default)s)")
    p.add_argument("--no-onnx", action="store_true", help="leave out the ONNX weights")
    p.add_argument("--no-check", action="store_true", help="skip the bioimageio test run")


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from napari_unet.core import export

    if Path(args.output).suffix.lower() != ".zip":
        raise InputError(f"{args.output}: a bioimage.io package is a .zip file")
    events = export.export_file(
        args.model,
        args.output,
        name=args.name,
        description=args.description,
        authors=args.author,
        license=args.license,
        onnx=not args.no_onnx,
        check=not args.no_check,
    )
    result = drive(events, None, "export")
    for note in result.notes:
        print(note, file=sys.stderr)
    test = "" if result.test_status is None else f"; bioimageio test {result.test_status}"
    formats = ", ".join(result.weight_formats)
    print(f"saved {result.path} ({formats}{test})", file=sys.stderr)
    return 0


# (name, help, add_arguments, run), in the order `napari-unet --help` lists them.
COMMANDS: list[
    tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = [
    ("weights", "loss weight map of instance labels (paper eq. 2)", _add_weights, _cmd_weights),
    ("evaluate", "score predicted labels against ground truth", _add_evaluate, _cmd_evaluate),
    ("predict", "labels of an image or stack, tile by tile", _add_predict, _cmd_predict),
    ("train", "train or fine-tune a U-Net on (sparse) labels", _add_train, _cmd_train),
    ("export", "write a bioimage.io model package (.zip)", _add_export, _cmd_export),
]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
