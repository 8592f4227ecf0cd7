"""Accuracy of the default CLI settings on synthetic touching cells (not a test).

Trains with `napari-unet train` exactly as a user would (defaults unless flags say
otherwise) on one synthetic image, predicts another of the same kind with
`napari-unet predict`, and scores AP at IoU 0.5 / 0.75 / 0.9 and the share of touching
pairs that come out separated. Cases:

- ``scratch``: a new light model, trained from scratch on one 512x512 image;
- ``starter``: the shipped starter model fine-tuned on the same image;
- ``stack``: a (16, 256, 256) stack with only 2 annotated slices, predicted on all;
- ``stack-starter``: the same, fine-tuning the starter model.

Targets (issue 8): AP@0.5 >= 0.9, AP@0.75 >= 0.7, >= 90 % touching pairs separated, in
at most 10 minutes of training on 2 CPU cores.

    python benchmarks/bench_accuracy.py [--cases scratch starter stack] [--max-minutes M]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_unet._cli import main as cli
from napari_unet.core import io, metrics
from napari_unet.core.synthetic import touching_cells, touching_cells_3d

ANNOTATED_SLICES = (4, 11)


def _run(args: list[str]) -> float:
    started = time.perf_counter()
    code = cli(args)
    if code != 0:
        raise SystemExit(f"napari-unet {' '.join(args)} failed with exit code {code}")
    return time.perf_counter() - started


def _score(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    if truth.ndim == 2:
        ap = metrics.average_precision(truth, predicted, (0.5, 0.75, 0.9))
    else:  # slice by slice, pooled (a cell counts once per slice)
        result = metrics.evaluate(truth, predicted, thresholds=(0.5, 0.75, 0.9), warping=False)
        ap = [result["ap@0.50"], result["ap@0.75"], result["ap@0.90"]]
    separated, total = metrics.touching_pairs_separated(truth, predicted)
    return {
        "ap50": float(ap[0]),
        "ap75": float(ap[1]),
        "ap90": float(ap[2]),
        "pairs_separated": separated / total if total else 1.0,
    }


def run_case(case: str, workdir: Path, extra: list[str]) -> dict[str, float]:
    if case.startswith("stack"):
        image, truth = touching_cells_3d((16, 256, 256), seed=21)
        sparse = np.zeros_like(truth)
        for z in ANNOTATED_SLICES:
            sparse[z] = truth[z]
        test_image, test_truth = image, truth
        train_labels = sparse
    else:
        image, train_labels = touching_cells((512, 512), seed=11)
        test_image, test_truth = touching_cells((512, 512), seed=12)
    paths = {name: workdir / f"{case}-{name}.tif" for name in ("image", "labels", "test", "pred")}
    io.write(paths["image"], image)
    io.write(paths["labels"], train_labels)
    io.write(paths["test"], test_image)
    model = workdir / f"{case}.safetensors"
    train_args = ["train", str(paths["image"]), str(paths["labels"]), "-o", str(model), *extra]
    if case.endswith("starter"):
        from napari_unet.models import starter_model_path

        train_args += ["--from", str(starter_model_path())]
    train_s = _run(train_args)
    predict_s = _run(["predict", str(model), str(paths["test"]), "-o", str(paths["pred"])])
    scores = _score(test_truth, io.read(paths["pred"]))
    return {"train_s": round(train_s, 1), "predict_s": round(predict_s, 1), **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="+", default=["scratch", "starter", "stack", "stack-starter"]
    )
    parser.add_argument("--max-minutes", type=float, help="passed to `napari-unet train`")
    parser.add_argument("--steps", type=int, help="passed to `napari-unet train`")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    extra = []
    if args.max_minutes:
        extra += ["--max-minutes", str(args.max_minutes)]
    if args.steps:
        extra += ["--steps", str(args.steps)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            results[case] = run_case(case, Path(tmp), extra)
            print(case, json.dumps(results[case]), flush=True)
    print(
        f"\n{'case':<13} {'train s':>8} {'predict s':>9} {'AP@.5':>6} {'AP@.75':>6} {'AP@.9':>6} {'pairs':>6}"
    )
    for case, r in results.items():
        print(
            f"{case:<13} {r['train_s']:>8.0f} {r['predict_s']:>9.1f} {r['ap50']:>6.3f} "
            f"{r['ap75']:>6.3f} {r['ap90']:>6.3f} {r['pairs_separated']:>6.1%}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
