"""Cellpose 3 from scratch, side by side with napari-unet (run in cellpose's own venv).

`bench_accuracy.py --cellpose-python PY` writes a job (JSON) and runs this script with
that interpreter: cellpose 3 cannot share napari-unet's environment (it pins an older
numpy). The job names training pairs, images to predict (and where to write their
labels) and a time budget. A new cellpose network (`pretrained_model=False`, the job's
``diam_mean``: 17 px for nuclei, 30 for cells; one gray channel) is trained with
`cellpose.train.train_seg` at its defaults (batch 8, 8 random crops per epoch) for as
many epochs as fit the budget (timed on runs of 1 and 3 epochs first, not counted),
then predicts each image at the training diameter. Needs only numpy, tifffile and
cellpose (`pip install torch==2.13.0 'cellpose<4'`).

    PY benchmarks/cellpose_side.py job.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

NIMG_PER_EPOCH = 8  # crops per epoch from the few training images (cellpose: one batch)
DIAM_MEAN = 17.0  # cellpose's mean diameter for nuclei models


def _train(net, images, labels, epochs: int, save: Path) -> Path:
    from cellpose import train

    path, _, _ = train.train_seg(
        net,
        train_data=images,
        train_labels=labels,
        channels=[0, 0],
        n_epochs=epochs,
        nimg_per_epoch=NIMG_PER_EPOCH,
        save_path=str(save),
        model_name="side",
        min_train_masks=1,
    )
    return Path(path)


def main(job_path: str) -> None:
    from cellpose import models

    job = json.loads(Path(job_path).read_text())
    images = [tifffile.imread(p).astype(np.float32) for p, _ in job["train"]]
    labels = [tifffile.imread(q).astype(np.int32) for _, q in job["train"]]
    save = Path(tempfile.mkdtemp(prefix="cellpose_side_"))
    budget_s = 60.0 * float(job["minutes"])

    def new_net():
        diam_mean = float(job.get("diam_mean", DIAM_MEAN))
        return models.CellposeModel(gpu=False, pretrained_model=False, diam_mean=diam_mean).net

    timed = []
    for n in (1, 3):  # the fixed cost (flows from the labels) and the cost per epoch
        probe = time.perf_counter()
        _train(new_net(), images, labels, n, save)
        timed.append(time.perf_counter() - probe)
    per_epoch = max((timed[1] - timed[0]) / 2, 1e-3)
    fixed = max(timed[0] - per_epoch, 0.0)
    epochs = max(10, int((budget_s - fixed) / per_epoch))
    started = time.perf_counter()  # the probes are the harness's cost, not cellpose's
    trained = _train(new_net(), images, labels, epochs, save)
    train_s = time.perf_counter() - started
    model = models.CellposeModel(gpu=False, pretrained_model=str(trained))
    for image_path, out_path in job["predict"]:
        image = tifffile.imread(image_path).astype(np.float32)
        masks = model.eval(image, channels=[0, 0], diameter=None)[0]
        tifffile.imwrite(out_path, masks.astype(np.uint16), compression="zlib")
    print(json.dumps({"epochs": epochs, "train_s": round(train_s, 1)}))


if __name__ == "__main__":
    main(sys.argv[1])
