"""A few painted cells on real images: starter vs fine-tuned (not a test).

Simulates a biologist who paints k cells: k ground-truth cells (drawn at random) are
copied into an empty labels layer, nothing else is marked, and a shipped starter model
is fine-tuned with the default settings for at most ``--minutes`` of CPU training: as
the Train dock's default "best starter (auto)", the one that finds the painted cells best
(``--start FILE`` to force one). Scores on the *rest* of the image (painted cells and
predictions on them are left out), for the starter it began from and the fine-tuned model
(the kept step, and the last weights as ``tuned_last``):

- DSB 2018 fluorescence nuclei: AP@0.5 of the starter and of the fine-tuned model;
- usiigaci phase contrast (one slice): foreground IoU.

Also reports the largest training-loss spike (loss / running median of the previous 50
steps, after step 20). Targets (issue 13): 10 cells AP@0.5 >= 0.70 on nuclei and never
below the starter; phase contrast 10 cells fg IoU >= 0.85; no spike above ~10x.

    python benchmarks/bench_sparse.py /path/to/shared/data/real [--cells 5 10 20 50]
        [--images ID ...] [--minutes 2] [--phase-slice 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np

from napari_unet.core import checkpoint, io, metrics, predict
from napari_unet.core.events import run_to_end
from napari_unet.core.train import Step, TrainConfig, TrainResult, training_job
from napari_unet.models import shipped_models

# 520x696 nuclei held out from the starter's training (`_real.HOLD_OUT_EVERY`); the
# earlier 0ea22171 / 07fb37aa / 4dbbb275 were among its training images
IMAGES = ("6b72b61b80060a9e", "9620c33d8ef2772d", "a891bbc89143bca7")


def paint(truth: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k random ground-truth cells copied into an empty labels layer (ids 1..k)."""
    ids = np.unique(truth)
    ids = ids[ids > 0]
    picked = np.random.default_rng(seed).choice(ids, min(k, len(ids)), replace=False)
    out = np.zeros(truth.shape, dtype=np.uint16)
    for new, old in enumerate(picked, start=1):
        out[truth == old] = new
    return out


def rest(truth: np.ndarray, painted: np.ndarray, predicted: np.ndarray):
    """Ground truth and prediction without the painted cells (or objects mostly on them)."""
    gt = truth.copy()
    gt[np.isin(truth, np.unique(truth[painted > 0]))] = 0
    pred = predicted.astype(np.int64)
    ids, inverse = np.unique(pred, return_inverse=True)
    on_painted = np.bincount(inverse.ravel(), weights=(painted > 0).ravel())
    sizes = np.bincount(inverse.ravel())
    drop = ids[(on_painted > 0.5 * sizes) & (ids > 0)]
    pred[np.isin(pred, drop)] = 0
    return gt, pred


def predicted_labels(net, meta, image) -> np.ndarray:
    config = predict.PredictConfig(device="cpu")
    return run_to_end(predict.prediction_job((net, meta), image, config)).labels


def max_spike(history: list[float]) -> float:
    worst = 0.0
    for i in range(20, len(history)):
        median = float(np.median(history[max(0, i - 50) : i]))
        worst = max(worst, history[i] / max(median, 1e-8))
    return worst


def fine_tune(
    image, painted, minutes: float, seed: int, steps: int | None, anchor=None, start=None
):
    """A starter fine-tuned as the Train dock does it: `training_job`, default settings,
    from ``start`` (default: the dock's "best starter", the shipped starter that finds the
    painted cells best)."""
    result = TrainResult()
    losses = []
    started = time.perf_counter()
    config = TrainConfig(device="cpu", max_minutes=minutes, seed=seed, steps=steps, anchor=anchor)
    for event in training_job(image, painted, config, start, result=result):
        if isinstance(event, Step):
            losses.append(event.loss)
    return result, losses, time.perf_counter() - started


def score(kind: str, truth, painted, labels) -> float:
    gt, pred = rest(truth, painted, labels)
    if kind == "phase":
        keep = painted == 0
        return float(metrics.iou_score((gt > 0) & keep, (pred > 0) & keep))
    return float(metrics.average_precision(gt, pred, (0.5,))[0])


def run_case(kind, name, image, truth, k, minutes, seed, steps=None, anchor=None, start=None):
    painted = paint(truth, k, seed)
    starts = [start] if start else [str(m.path) for m in shipped_models()]
    result, losses, seconds = fine_tune(image, painted, minutes, seed, steps, anchor, starts)
    net = result.best_net()
    tuned = predicted_labels(net, result.metadata, image)
    last = copy.deepcopy(net)  # the last weights, to weigh the keep rule against them
    last.load_state_dict(result.resume.weights)
    tuned_last = predicted_labels(last, result.metadata, image)
    chosen = result.metadata["training"]["from"]
    began = checkpoint.load(next(p for p in starts if Path(p).name == chosen))
    out = {
        "kind": kind,
        "image": name,
        "cells": k,
        "from": chosen,
        "start_scores": result.metadata["training"].get("start_scores"),
        "starter": round(score(kind, truth, painted, predicted_labels(*began, image)), 3),
        "tuned": round(score(kind, truth, painted, tuned), 3),
        "tuned_last": round(score(kind, truth, painted, tuned_last), 3),
        "train_s": round(seconds, 1),
        "steps": result.steps_done,
        "best_step": result.best_step,
        "kept_start": result.kept_start,
        "anchor": result.metadata["training"]["anchor"],
        "start_iou": result.metadata["training"]["start_iou"],
        # held-out validation IoU of the kept step, to study the keep rule against the
        # score on the rest of the image (a kept step barely above the start can be worse)
        "kept_iou": next(
            (
                v["iou"]
                for v in result.metadata["validation"]["history"]
                if v["step"] == result.best_step
            ),
            None,
        ),
        "max_spike": round(max_spike(losses), 2),
        "annotation": result.metadata["training"].get("annotation"),
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the real data folder (dsb2018/, usiigaci_phase/)")
    parser.add_argument("--cells", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--images", nargs="+", default=list(IMAGES))
    parser.add_argument("--minutes", type=float, default=2.0, help="training time per case")
    parser.add_argument("--phase-slice", type=int, default=0, help="-1: skip phase contrast")
    parser.add_argument("--phase-cells", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="cap on steps (default: the preset's)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: every core; 1 is several times faster on a busy machine)",
    )
    parser.add_argument("--no-auto-background", action="store_true")
    parser.add_argument(
        "--anchor", type=float, help="pull toward the starter (default: the training default)"
    )
    parser.add_argument("--start", help="fine-tune this model file (default: the best starter)")
    args = parser.parse_args()
    if args.threads:
        import torch

        import napari_unet.core.train as core_train

        def fixed_threads() -> int:
            torch.set_num_threads(args.threads)
            torch.set_flush_denormal(True)
            return args.threads

        core_train.use_all_cpu_cores = fixed_threads
    if args.no_auto_background:
        import napari_unet.core.data as core_data

        core_data.AUTO_BACKGROUND = False
    results = []
    for name in args.images:
        image = io.read(args.data / "dsb2018" / "images" / f"{name}.tif")
        image = image[..., 0] if image.ndim == 3 else image
        truth = io.read(args.data / "dsb2018" / "labels" / f"{name}.tif")
        for k in args.cells:
            results.append(
                run_case(
                    "nuclei",
                    name,
                    image,
                    truth,
                    k,
                    args.minutes,
                    args.seed,
                    args.steps,
                    args.anchor,
                    args.start,
                )
            )
    if args.phase_slice >= 0:
        folder = args.data / "usiigaci_phase"
        image = io.read(folder / "image.tif")[args.phase_slice]
        truth = io.read(folder / "labels.tif")[args.phase_slice]
        results.append(
            run_case(
                "phase",
                "usiigaci",
                image,
                truth,
                args.phase_cells,
                args.minutes,
                args.seed,
                args.steps,
                args.anchor,
                args.start,
            )
        )
    print(
        f"\n{'kind':<7} {'image':<17} {'cells':>5} {'starter':>7} {'tuned':>6} {'spike':>6} {'s':>5}"
    )
    for r in results:
        print(
            f"{r['kind']:<7} {r['image']:<17} {r['cells']:>5} {r['starter']:>7.3f} "
            f"{r['tuned']:>6.3f} {r['max_spike']:>6.1f} {r['train_s']:>5.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
