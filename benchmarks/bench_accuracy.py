"""Accuracy of the default CLI settings on synthetic touching cells (not a test).

Trains with `napari-unet train` exactly as a user would (defaults unless flags say
otherwise) on one synthetic image, predicts another of the same kind with
`napari-unet predict`, and scores AP at IoU 0.5 / 0.75 / 0.9 and the share of touching
pairs that come out separated. Cases:

- ``defaults``: `train` with no options on one 512x512 image (the best shipped
  starter, fine-tuned);
- ``starter``: the shipped nuclei starter fine-tuned on the same image;
- ``stack``: a (16, 256, 256) stack with only 2 annotated slices, predicted on all;
- ``stack-starter``: the same, fine-tuning the nuclei starter;
- ``hard`` / ``hard-starter``: `synthetic.hard_nuclei` (small dense nuclei touching
  without an intensity dip, 5x brightness spread, Poisson noise), 256x256.

Targets (issue 8): AP@0.5 >= 0.9, AP@0.75 >= 0.7, >= 90 % touching pairs separated, in
at most 10 minutes of training on 2 CPU cores.

    python benchmarks/bench_accuracy.py [--cases defaults starter stack] [--max-minutes M]

Real-data mode (``--real ROOT``, the shared `data/real` folder; `benchmarks/_real.py`),
the CLI at its defaults on what a biologist meets (held-out DSB images only):

- ``fluo``: one fluorescence image, top half annotated (cropped), bottom half predicted;
  over ``--images N`` images (scored on each bottom half, averaged); the defaults
  fine-tune the shipped starter;
- ``fluo-new``: the same, a new model (``--preset light``);
- ``fluo-starter``: the same, ``--from`` the shipped starter explicitly;
- ``starter-zero``: the shipped starter on the bottom halves, no training;
- ``phase``: phase-contrast images 0 and 1 annotated (two pairs), 2-5 predicted;

- ``fluo-cellpose`` / ``phase-cellpose``: cellpose 3 trained from scratch on the same
  pairs for the same minutes (``--max-minutes``, else the CLI's CPU cap of 8.5), run by
  `cellpose_side.py` in its own venv (``--cellpose-python``; `pip install 'cellpose<4'`
  would downgrade numpy in the project's environment).

Scores: AP@0.5, AP@0.75, mean AP over IoU 0.50:0.05:0.95, foreground IoU, SEG, touching
pairs separated (pooled), training seconds.

    python benchmarks/bench_accuracy.py --real /work/shared/data/real --cases fluo phase
        [--images 4] [--train-args "--classes 3"] [--json benchmarks/out/real.json]
        [--compare-predict=--no-tta ...] (the same models predicted another way too)
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
from napari_unet.core.synthetic import hard_nuclei, touching_cells, touching_cells_3d

REAL_CASES = (
    "fluo",
    "fluo-new",
    "fluo-starter",
    "starter-zero",
    "phase",
    "fluo-cellpose",
    "phase-cellpose",
)
CELLPOSE: dict[str, object] = {"python": None, "minutes": 8.5}  # --cellpose-python
PHASE_TRAIN, PHASE_TEST = (0, 1), (2, 3, 4, 5)
IDS: list[str] = []  # --ids: these DSB images instead
# --compare-predict (repeatable): each variant's `predict` arguments and its labels
COMPARED: dict[str, list] = {"args": [], "labels": []}
MIN_PAIRS = 2  # fluorescence images picked for the half-image case touch at least this often

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
    elif case.startswith("hard"):  # small dense nuclei, no dip at contacts (as on DSB)
        image, train_labels = hard_nuclei((256, 256), seed=11)
        test_image, test_truth = hard_nuclei((256, 256), seed=12)
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


def real_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    ap = metrics.average_precision(truth, predicted, metrics.IOU_THRESHOLDS)
    separated, total = metrics.touching_pairs_separated(truth, predicted)
    return {
        "ap50": float(ap[0]),
        "ap75": float(ap[5]),
        "map": float(np.mean(ap)),
        "fg_iou": metrics.iou_score(truth, predicted),
        "seg": metrics.seg_score(truth, predicted),
        "separated": separated,
        "pairs": total,
    }


def summarise(rows: list[dict[str, float]], train_s: list[float]) -> dict[str, float]:
    out = {
        k: round(float(np.mean([r[k] for r in rows])), 4)
        for k in ("ap50", "ap75", "map", "fg_iou", "seg")
    }
    pairs = sum(r["pairs"] for r in rows)
    out["pairs_separated"] = round(sum(r["separated"] for r in rows) / pairs, 4) if pairs else 1.0
    out["pairs"] = pairs
    out["images"] = len(rows)
    out["train_s"] = round(float(np.mean(train_s)), 1) if train_s else 0.0
    return out


def fluo_images(root: str, n: int) -> list[str]:
    """The first ``n`` held-out fluorescence images with touching nuclei (or ``--ids``)."""
    from _real import dsb_index

    if IDS:
        return IDS[:n]

    picked = [
        e.id
        for e in dsb_index(root)
        if e.held_out and e.cls == "fluorescence_gray" and e.touching_pairs >= MIN_PAIRS
    ]
    return picked[:n]


def write_case(
    workdir: Path,
    name: str,
    train_pairs: list[tuple[np.ndarray, np.ndarray]],
    tests: list[np.ndarray],
) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """Write a case's files: ((image, labels) per training pair, (test image, where its
    predicted labels go) per test image)."""
    pairs, runs = [], []
    for i, (image, labels) in enumerate(train_pairs):
        pairs.append((workdir / f"{name}-img{i}.tif", workdir / f"{name}-lab{i}.tif"))
        io.write(pairs[-1][0], image)
        io.write(pairs[-1][1], labels)
    for i, image in enumerate(tests):
        runs.append((workdir / f"{name}-test{i}.tif", workdir / f"{name}-pred{i}.tif"))
        io.write(runs[-1][0], image)
    return pairs, runs


def train_predict(
    workdir: Path,
    name: str,
    train_pairs: list[tuple[np.ndarray, np.ndarray]],
    tests: list[np.ndarray],
    train_extra: list[str],
    predict_extra: list[str],
    start: str | None = None,
) -> tuple[list[np.ndarray], float]:
    """`napari-unet train` on the pairs, `predict` on each test image; (labels, train s).

    With ``--compare-predict=ARGS`` (repeatable) the same model also predicts with ARGS
    instead, kept in `COMPARED` (a paired comparison, free of run-to-run training noise)."""
    pairs, runs = write_case(workdir, name, train_pairs, tests)
    model = workdir / f"{name}.safetensors"
    train_s = 0.0
    if start is None or train_pairs:
        args = ["train", *(str(f) for pair in pairs for f in pair), "-o", str(model)]
        args += train_extra
        train_s = _run(args + (["--from", start] if start else []))
    else:
        model = Path(start)
    out = []
    for src, dst in runs:
        _run(["predict", str(model), str(src), "-o", str(dst), *predict_extra])
        out.append(io.read(dst))
        for variant, labels in zip(COMPARED["args"], COMPARED["labels"], strict=True):
            _run(["predict", str(model), str(src), "-o", str(dst), *variant])
            labels.append(io.read(dst))
    return out, train_s


def cellpose_predict(
    workdir: Path,
    name: str,
    train_pairs: list[tuple[np.ndarray, np.ndarray]],
    tests: list[np.ndarray],
    diam_mean: float,
) -> tuple[list[np.ndarray], float]:
    """Cellpose 3 from scratch on the same pairs and time (`cellpose_side.py`, run with
    ``--cellpose-python``); (labels of each test image, train s)."""
    import subprocess
    import sys

    if not CELLPOSE["python"]:
        raise SystemExit("the cellpose cases need --cellpose-python (a venv with 'cellpose<4')")
    pairs, runs = write_case(workdir, name, train_pairs, tests)
    job = {
        "train": [[str(f) for f in pair] for pair in pairs],
        "predict": [[str(f) for f in run] for run in runs],
        "minutes": CELLPOSE["minutes"],
        "diam_mean": diam_mean,
    }
    job_file = workdir / f"{name}.json"
    job_file.write_text(json.dumps(job))
    script = Path(__file__).with_name("cellpose_side.py")
    done = subprocess.run(
        [str(CELLPOSE["python"]), str(script), str(job_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"cellpose failed with exit code {done.returncode}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return [io.read(dst) for _, dst in runs], float(report["train_s"])


def run_real(
    root: str,
    cases: list[str],
    n_images: int,
    train_extra: list[str],
    predict_extra: list[str],
) -> dict[str, dict]:
    from _real import load_dsb, load_phase
    from napari_unet.models import starter_model_path

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for case in cases:
            rows, times = [], []
            compared: list[list[dict]] = [[] for _ in COMPARED["args"]]
            if case.startswith("phase"):
                stack, truth = load_phase(root)
                pairs = [(stack[i], truth[i]) for i in PHASE_TRAIN]
                tests = [stack[i] for i in PHASE_TEST]
                if case == "phase-cellpose":
                    preds, train_s = cellpose_predict(workdir, case, pairs, tests, 30.0)
                else:
                    preds, train_s = train_predict(
                        workdir, case, pairs, tests, train_extra, predict_extra
                    )
                rows = [real_scores(truth[i], p) for i, p in zip(PHASE_TEST, preds, strict=True)]
                compared = [  # empty for cellpose, which predicts once
                    [real_scores(truth[i], p) for i, p in zip(PHASE_TEST, got, strict=True)]
                    if got
                    else []
                    for got in COMPARED["labels"]
                ]
                times = [train_s]
            else:
                for image_id in fluo_images(root, n_images):
                    image, labels = load_dsb(root, image_id)
                    half = labels.shape[0] // 2
                    top = (image[:half], labels[:half])
                    bottom_truth = labels[half:]
                    start = str(starter_model_path()) if "starter" in case else None
                    pairs = [] if case == "starter-zero" else [top]
                    if case == "fluo-cellpose":
                        preds, train_s = cellpose_predict(
                            workdir, f"{case}-{image_id}", pairs, [image[half:]], 17.0
                        )
                    else:
                        preds, train_s = train_predict(
                            workdir,
                            f"{case}-{image_id}",
                            pairs,
                            [image[half:]],
                            train_extra + (["--preset", "light"] if case == "fluo-new" else []),
                            predict_extra,
                            start,
                        )
                    pred = preds[0]
                    rows.append(real_scores(bottom_truth, pred))
                    for rows_of, got in zip(compared, COMPARED["labels"], strict=True):
                        if got:  # empty for cellpose, which predicts once
                            rows_of.append(real_scores(bottom_truth, got[-1]))
                    times.append(train_s)
                    print(
                        f"  {case} {image_id}",
                        json.dumps({k: round(float(v), 3) for k, v in rows[-1].items()}),
                        f"train {train_s:.0f} s",
                        flush=True,
                    )
            results[case] = summarise(rows, times)
            print(case, json.dumps(results[case]), flush=True)
            for args, rows_of, got in zip(
                COMPARED["args"], compared, COMPARED["labels"], strict=True
            ):
                if rows_of:
                    variant = f"{case} {' '.join(args)}"
                    results[variant] = summarise(rows_of, times)
                    print(variant, json.dumps(results[variant]), flush=True)
                got.clear()
    return results


def report(results: dict[str, dict], columns: tuple[str, ...]) -> None:
    """One row per case: seconds as integers, shares as percentages, scores to 3 places."""
    print(f"\n{'case':<14}" + "".join(f" {c:>15}" for c in columns))
    for case, r in results.items():
        cells = [
            f"{r[c]:>15.0f}"
            if c.endswith("_s")
            else f"{r[c]:>15.1%}"
            if c.startswith("pairs")
            else f"{r[c]:>15.3f}"
            for c in columns
        ]
        print(f"{case:<14} " + " ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="+", default=["defaults", "starter", "stack", "stack-starter"]
    )
    parser.add_argument("--max-minutes", type=float, help="passed to `napari-unet train`")
    parser.add_argument("--steps", type=int, help="passed to `napari-unet train`")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--real", metavar="ROOT", help="real-data mode on this data folder")
    parser.add_argument("--images", type=int, default=20, help="real: fluorescence images")
    parser.add_argument("--train-args", default="", help="real: extra `train` arguments")
    parser.add_argument("--predict-args", default="", help="real: extra `predict` arguments")
    parser.add_argument("--ids", nargs="+", default=[], help="real: these DSB image ids")
    parser.add_argument(
        "--compare-predict",
        action="append",
        default=[],
        metavar="ARGS",
        help="real: also predict with these `predict` arguments on the same models "
        "(repeatable; write --compare-predict=--no-tta)",
    )
    parser.add_argument(
        "--cellpose-python", metavar="PY", help="real: python of a venv with 'cellpose<4'"
    )
    args = parser.parse_args()
    IDS[:] = args.ids
    COMPARED["args"] = [variant.split() for variant in args.compare_predict]
    COMPARED["labels"] = [[] for _ in COMPARED["args"]]
    CELLPOSE["python"] = args.cellpose_python
    CELLPOSE["minutes"] = args.max_minutes or CELLPOSE["minutes"]
    if args.real:
        cases = [c for c in args.cases if c in REAL_CASES] or ["fluo", "phase"]
        results = run_real(
            args.real,
            cases,
            args.images,
            args.train_args.split()
            + (["--max-minutes", str(args.max_minutes)] if args.max_minutes else [])
            + (["--steps", str(args.steps)] if args.steps else []),
            args.predict_args.split(),
        )
        report(results, ("train_s", "ap50", "ap75", "map", "fg_iou", "seg", "pairs_separated"))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return
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
    report(results, ("train_s", "predict_s", "ap50", "ap75", "ap90", "pairs_separated"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
