"""Train the shipped phase-contrast starter model on the usiigaci development images.

Training data: slices 6-29 of the shared usiigaci phase-contrast stack (Zernike phase
contrast, 10x, adherent cells; MIT), each a whole 1022x1024 image normalised on its own
and shrunk to the canonical cell size (`core.size`); slices 0-5 are what the benchmarks
use (`bench_accuracy.py` phase case: 0 and 1 annotated, 2-5 predicted; `bench_sparse.py`:
slice 0), so they are never trained on. The light preset with 3 classes, the weight map,
the kept weights chosen by validation foreground IoU (the phase-contrast measure). Then it
is scored without fine-tuning on slices 2-5 (foreground IoU, AP@0.5, AP@0.75) and the
training data and scores go into the model's metadata.

    python benchmarks/make_phase_starter.py /work/shared/data/real [--max-minutes 40]
        [-o src/napari_unet/models/phase_starter.safetensors] [--score-only]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from _real import load_phase
from make_starter_model import (
    record_scores,
    run_options,
    save_starter,
    starter_parser,
    train_starter,
)
from napari_unet.core import checkpoint, metrics
from napari_unet.core.events import run_to_end
from napari_unet.core.predict import PredictConfig, prediction_job
from napari_unet.models import phase_starter_model_path

TRAIN_SLICES = range(6, 30)
SCORE_SLICES = range(2, 6)


def score(root: str, model: Path) -> dict:
    """Foreground IoU (pooled) and mean AP@0.5 / AP@0.75 on ``SCORE_SLICES``."""
    net, meta = checkpoint.load(model)
    stack, truth = load_phase(root)
    inter = union = 0
    aps = []
    for z in SCORE_SLICES:
        job = prediction_job((net, meta), stack[z], PredictConfig(device="cpu"))
        predicted = run_to_end(job).labels
        gt, pred = truth[z] > 0, predicted > 0
        inter, union = inter + int((gt & pred).sum()), union + int((gt | pred).sum())
        aps.append(metrics.average_precision(truth[z], predicted, (0.5, 0.75)))
    ap = np.mean(aps, axis=0)
    return {
        "slices": list(SCORE_SLICES),
        "fg_iou": round(inter / union, 4),
        "ap50": round(float(ap[0]), 4),
        "ap75": round(float(ap[1]), 4),
        "tta": PredictConfig().tta,  # scored as `predict` runs by default
    }


def main() -> None:
    parser = starter_parser(__doc__, "usiigaci_phase/", phase_starter_model_path())
    args = parser.parse_args()
    if not args.score_only:
        stack, truth = load_phase(args.root)
        pairs = [(stack[z], truth[z]) for z in TRAIN_SLICES]
        result = train_starter(
            pairs,
            args.output,
            args.max_minutes,
            args.steps,
            args.start,
            select_by="iou",
            **run_options(args),
        )
        record = {
            "data": "usiigaci phase contrast (github.com/oist/Usiigaci), manual outlines",
            "licence": "MIT, Copyright (c) 2018 Okinawa Institute of Science & Technology",
            "training_slices": list(TRAIN_SLICES),
            "held_out": "slices 0-5 (the benchmarks' images, never trained on)",
        }
        save_starter(result, args.output, args.start, record, args.last)
    if not args.no_score:
        record_scores(args.output, score(args.root, args.output))


if __name__ == "__main__":
    main()
