"""Train a stained-brightfield RGB starter on the DSB2018 development images.

Training data: every DSB2018 image of class ``stained_color_brightfield`` of the shared
set (`../shared/data/real`, CC0) not held out by `_real.HOLD_OUT_EVERY`, as colour
(3 channels, each image normalised on its own); the held-out ones are what
`bench_channels.py --cases dsb` trains on (3) and predicts (8), so they are never
trained on. It starts from the nuclei starter, its first layer spread over R, G, B
(`model.spread_input_channels`); the light preset, 3 classes, the weight map; the kept
weights chosen by validation AP@0.5 on the image with the most touching nuclei. Then it
is scored without fine-tuning on the 11 held-out images (AP@0.5 pooled and per image).

    python benchmarks/make_stained_starter.py /work/shared/data/real [--max-minutes 40]
        [-o src/napari_unet/models/stained_starter.safetensors] [--score-only]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from _real import dsb_index
from make_starter_model import (
    hardest_last,
    record_scores,
    save_starter,
    starter_parser,
    train_starter,
)
from napari_unet.core import checkpoint, io, metrics
from napari_unet.core.events import run_to_end
from napari_unet.core.predict import PredictConfig, prediction_job
from napari_unet.models import stained_starter_model_path, starter_model_path

CLASS = "stained_color_brightfield"


def _images(root: str, held_out: bool) -> list[str]:
    return [e.id for e in dsb_index(root) if e.cls == CLASS and e.held_out == held_out]


def _read(root: str, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(RGB (Y, X, 3), labels) of one DSB image."""
    base = Path(root) / "dsb2018"
    image = io.read(base / "images" / f"{image_id}.tif")[..., :3]
    return image, io.read(base / "labels" / f"{image_id}.tif")


def pairs(root: str) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """(C, Y, X) image / labels pairs; the last (the validation image) has the most
    touching nuclei, so the kept weights are chosen on what is hard."""
    ids = _images(root, held_out=False)
    out = []
    for i in ids:
        image, labels = _read(root, i)
        out.append((np.moveaxis(image, -1, 0)[None], labels[None]))  # one (1, C, Y, X) slice
    hardest_last(out, ids)
    return out, ids


def score(root: str, model: Path) -> dict:
    """AP@0.5 on the held-out images, pooled over them and per image."""
    net, meta = checkpoint.load(model)
    tp = n_gt = n_pred = 0
    per_image = {}
    for i in _images(root, held_out=True):
        image, truth = _read(root, i)
        job = prediction_job((net, meta), image, PredictConfig(device="cpu"), axes="YXC")
        m = metrics.match(truth, run_to_end(job).labels)
        k = len(m.matched(0.5))
        tp, n_gt, n_pred = tp + k, n_gt + len(m.gt_ids), n_pred + len(m.pred_ids)
        per_image[i] = round(k / (len(m.gt_ids) + len(m.pred_ids) - k), 4)
    return {"images": len(per_image), "ap50_pooled": round(tp / (n_gt + n_pred - tp), 4),
            "per_image": per_image, "tta": PredictConfig().tta}  # fmt: skip


def main() -> None:
    parser = starter_parser(__doc__, "dsb2018/", stained_starter_model_path())
    parser.set_defaults(start=str(starter_model_path()))
    args = parser.parse_args()
    if not args.score_only:
        data, ids = pairs(args.root)
        result = train_starter(
            data, args.output, args.max_minutes, args.steps, args.start, channels=3
        )
        record = {
            "data": "DSB2018 stage-1 train (BBBC038, CC0), community-fixed masks",
            "class": CLASS,
            "training_ids": ids,
            "held_out": "every 5th image sorted by id (never trained on)",
        }
        save_starter(result, args.output, args.start, record)
    record_scores(args.output, score(args.root, args.output))


if __name__ == "__main__":
    main()
