"""Channels and 3D objects (issue 14), not a test: three figures.

- ``linking``: synthetic (16, 256, 256) stacks with known 3D cells, segmented slice by
  slice (each slice's true objects, shuffled ids; or with separation gaps as a U-Net
  draws them), then linked by `core.stitch`: share of cells that come out as exactly one
  3D label, splits and merges; cellpose's IoU measure for comparison.
- ``step``: training step time of a 3-channel vs a 1-channel input (light model, CPU).
- ``dsb``: stained-brightfield RGB nuclei from the DSB 2018 set (``--dsb PATH``, the
  folder with index.csv), only images held out from the starter's training:
  `napari-unet train` with its defaults (the starter spread over R, G, B; extra
  arguments such as ``--preset light`` pass through) on ``--n-train`` images, then
  `napari-unet predict` on ``--n-test`` others, AP@0.5 per image and pooled;
  ``dsb-gray``: the same images as inverted gray, fine-tuning the gray starter.

    python benchmarks/bench_channels.py [--cases linking step dsb] [--dsb PATH]
        [--n-train 3 --n-test 8] [train arguments]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core import io, metrics, stitch
from napari_unet.core.synthetic import touching_cells, touching_cells_3d
from napari_unet.core.weights import separate_touching

SEEDS = (0, 1, 2)


def _counts(gt: np.ndarray, out: np.ndarray) -> tuple[int, int, int, int]:
    """(cells found as one 3D label: matched at IoU >= 0.5, neither split nor merged;
    splits; merges; cells)."""
    m = metrics.match(gt, out)
    splits, merges = metrics.split_merge(m)
    hits = m.matched(0.5)
    good = ~np.isin(m.pair_gt[hits], splits) & ~np.isin(m.pair_pred[hits], merges)
    return int(good.sum()), len(splits), len(merges), len(m.gt_ids)


def linking() -> dict:
    rows = {}
    stacks = [touching_cells_3d((16, 256, 256), seed=seed)[1] for seed in SEEDS]
    separated = [np.stack([ndi.label(separate_touching(p) > 0)[0] for p in gt]) for gt in stacks]
    cases = {
        "true slices": [(gt, gt) for gt in stacks],
        "separated slices": [(gt * (s > 0), s) for gt, s in zip(stacks, separated, strict=True)],
    }
    measures = (
        (stitch.SMALLER, stitch.STITCH_THRESHOLD),
        (stitch.SMALLER, 0.5),
        (stitch.IOU, 0.25),
    )
    for kind, pairs in cases.items():
        for measure, threshold in measures:
            totals = np.zeros(4, int)
            for gt, slices in pairs:
                totals += _counts(gt, stitch.stitch(slices, threshold, measure))
            good, splits, merges, n = totals.tolist()
            rows[f"{kind}, {measure} >= {threshold}"] = {
                "one_label_each": round(good / n, 4),
                "splits": splits,
                "merges": merges,
                "cells": n,
            }
    return rows


def step_time(steps: int = 10) -> dict:
    from napari_unet.core import train

    gray, labels = touching_cells((256, 256), seed=0)
    rgb = np.stack([gray, 0.5 * gray, 1 - gray], axis=-1)
    result = {}
    for name, image in (("1 channel", gray), ("3 channels", rgb)):
        config = {"steps": steps, "preset": "light", "device": "cpu", "validate_every": 10_000}
        times = []
        for event in train.training_job(image, labels, config):
            if isinstance(event, train.Step) and event.step > 2:  # skip warm-up steps
                times.append(1.0 / event.tiles_per_s)
        result[name] = float(np.min(times))  # the least disturbed step (shared CPUs)
    result["ratio"] = round(result["3 channels"] / result["1 channel"], 3)
    return result


def _inverted_gray(rgb: np.ndarray) -> np.ndarray:
    """Stained nuclei are dark on a light ground: gray, inverted (bright nuclei)."""
    from skimage.color import rgb2gray

    return (255 * (1.0 - rgb2gray(rgb[..., :3]))).astype(np.uint8)


def dsb(
    root: Path, n_train: int = 3, n_test: int = 8, extra: list[str] = (), gray: bool = False
) -> dict:
    """``gray``: convert to inverted gray and fine-tune the starter model instead."""
    from _real import dsb_index
    from napari_unet._cli import main as cli
    from napari_unet.models import starter_model_path

    held_out = [  # not seen by the starter model; all 256x320
        e.id
        for e in dsb_index(root.parent)
        if e.held_out and e.cls == "stained_color_brightfield" and e.shape[:2] == (256, 320)
    ]
    train_ids, test_ids = held_out[:n_train], held_out[n_train : n_train + n_test]
    work = Path(tempfile.mkdtemp(prefix="bench_channels_"))
    if gray:
        extra = [*extra, "--from", str(starter_model_path())]
    # one image/labels pair per training image, as a biologist's separate files are (each
    # normalised on its own; one TYXC stack would be normalised as a whole)
    pairs = []
    for i in train_ids:
        image = io.read(root / "images" / f"{i}.tif")
        io.write(work / f"train_{i}.tif", _inverted_gray(image) if gray else image)
        io.write(work / f"train_{i}_labels.tif", io.read(root / "labels" / f"{i}.tif"))
        pairs += [str(work / f"train_{i}.tif"), str(work / f"train_{i}_labels.tif")]
    model = work / "rgb.safetensors"
    started = time.perf_counter()
    args = ["train", *pairs, "-o", str(model)]
    assert cli([*args, "--axes", "YX" if gray else "YXC", *extra]) == 0
    train_s = time.perf_counter() - started
    tp = n_gt = n_pred = 0
    per_image = {}
    for i in test_ids:
        out, source = work / f"{i}.tif", root / "images" / f"{i}.tif"
        if gray:
            io.write(work / f"in_{i}.tif", _inverted_gray(io.read(source)))
            source = work / f"in_{i}.tif"
        assert cli(["predict", str(model), str(source), "-o", str(out)]) == 0
        gt, pred = io.read(root / "labels" / f"{i}.tif"), io.read(out)
        m = metrics.match(gt, pred)
        k = len(m.matched(0.5))
        tp, n_gt, n_pred = tp + k, n_gt + len(m.gt_ids), n_pred + len(m.pred_ids)
        per_image[i] = round(k / (len(m.gt_ids) + len(m.pred_ids) - k), 4)
    return {
        "train_images": train_ids,
        "test_images": len(test_ids),
        "train_s": round(train_s, 1),
        "ap50_pooled": round(tp / (n_gt + n_pred - tp), 4),
        "ap50_mean_per_image": round(float(np.mean(list(per_image.values()))), 4),
        "per_image": per_image,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["linking", "step"])
    parser.add_argument("--dsb", type=Path, help="DSB 2018 folder with index.csv (dsb, dsb-gray)")
    parser.add_argument("--n-train", type=int, default=3)
    parser.add_argument("--n-test", type=int, default=8)
    args, extra = parser.parse_known_args()
    out = {}
    if "linking" in args.cases:
        out["linking"] = linking()
    if "step" in args.cases:
        out["step_time_s"] = step_time()
    if "dsb" in args.cases:
        if args.dsb is None:
            raise SystemExit("--dsb PATH is needed for the dsb case")
        out["dsb_stained_rgb"] = dsb(args.dsb, args.n_train, args.n_test, extra)
    if "dsb-gray" in args.cases:
        out["dsb_stained_gray_starter"] = dsb(args.dsb, args.n_train, args.n_test, extra, True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
