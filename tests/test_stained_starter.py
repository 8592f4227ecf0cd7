"""The shipped stained-brightfield starter: a small colour (RGB) model that segments
stained nuclei it never saw better than the gray nuclei starter spread over R, G, B, and
that the best-starter choice picks for such images.

Fixture: a 128x128 crop of DSB2018 image aa58ba4512955771 (CC0; see tests/data/README.md),
an image held out from every starter's training.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_unet.core import io, metrics
from napari_unet.core.data import TrainingData
from napari_unet.core.events import run_to_end
from napari_unet.core.predict import PredictConfig, prediction_job
from napari_unet.core.train import TrainConfig, choose_start
from napari_unet.models import (
    phase_starter_model_path,
    stained_starter_model_path,
    starter_model_path,
)
from test_starter_model import small_light_starter_metadata

DATA = Path(__file__).with_name("data")
CROP_ID = "aa58ba4512955771"
# a sanity floor, not the accuracy claim (measured on this crop: AP@0.5 0.74, AP@0.75 0.47;
# docs/accuracy.md "Accuracy on real images")
AP50_MIN = 0.5


@pytest.fixture(scope="module")
def stained_crop() -> tuple[np.ndarray, np.ndarray]:
    return (
        io.read(DATA / "dsb2018_aa58ba45_crop.tif"),
        io.read(DATA / "dsb2018_aa58ba45_crop_labels.tif"),
    )


def test_stained_starter_is_a_small_light_colour_model_with_its_record():
    metadata = small_light_starter_metadata(stained_starter_model_path())
    assert metadata["architecture"]["in_channels"] == 3
    record = metadata["starter"]
    assert CROP_ID not in record["training_ids"] and len(record["training_ids"]) >= 50
    assert "CC0" in record["data"] and record["class"] == "stained_color_brightfield"
    assert 0.0 < record["scores_held_out"]["ap50_pooled"] <= 1.0


def test_stained_starter_finds_stained_nuclei_it_never_saw(stained_crop):
    image, truth = stained_crop
    labels = run_to_end(
        prediction_job(stained_starter_model_path(), image, PredictConfig(device="cpu"))
    ).labels
    assert metrics.average_precision(truth, labels, (0.5,))[0] > AP50_MIN


def test_the_best_starter_for_stained_rgb_is_the_stained_one(stained_crop):
    image, truth = stained_crop
    data = TrainingData.from_pairs([(np.moveaxis(image, -1, 0), truth)], n_classes=3, channels=3)
    starters = [
        str(p())
        for p in (starter_model_path, phase_starter_model_path, stained_starter_model_path)
    ]
    chosen, scores = choose_start(starters, data, TrainConfig(device="cpu"))
    assert chosen == starters[2]
    assert scores["stained_starter.safetensors"] > scores["starter.safetensors"]


def test_cli_predicts_with_a_shipped_starter_named_by_its_key(stained_crop, tmp_path, capsys):
    """`predict stained ...` needs no path into the installed package; the gray nuclei
    starter hands an RGB file to the stained starter and says so, alone or in a folder of
    gray and colour files; a gray model of one's own says the way out."""
    from napari_unet._cli import main

    image, truth = stained_crop
    folder = tmp_path / "in"
    io.write(folder / "stained.tif", image)
    io.write(folder / "gray.tif", image.mean(axis=-1).astype(np.uint8))
    assert (
        main(["predict", "stained", str(folder / "stained.tif"), "-o", str(tmp_path / "l.tif")])
        == 0
    )
    labels = io.read(tmp_path / "l.tif")
    assert metrics.average_precision(truth, labels, (0.5,))[0] > AP50_MIN
    capsys.readouterr()
    one = ["predict", "starter", str(folder / "stained.tif"), "-o", str(tmp_path / "g.tif")]
    assert main(one) == 0
    err = capsys.readouterr().err
    assert "stained.tif has other channels" in err and "with the Stained RGB starter" in err
    assert np.array_equal(io.read(tmp_path / "g.tif"), labels)
    own = tmp_path / "my_gray_model.safetensors"  # a user's own gray model never switches
    shutil.copy(starter_model_path(), own)
    mine = ["predict", str(own), str(folder / "stained.tif"), "-o", str(tmp_path / "m.tif")]
    assert main(mine) == 2
    err = capsys.readouterr().err
    assert "Stained RGB starter" in err and "predict stained" in err
    assert not (tmp_path / "m.tif").exists()
    assert main(["predict", "starter", str(folder), "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "stained.tif" in err and "predicted with the Stained RGB starter" in err
    assert "gray.tif has other channels" not in err
    assert np.array_equal(io.read(tmp_path / "out" / "stained_labels.tif"), labels)
    gray = io.read(tmp_path / "out" / "gray_labels.tif")
    assert gray.ndim == 2 and gray.max() > 0
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        models = {row["image"]: row["model"] for row in csv.DictReader(f)}
    assert models == {
        "gray.tif": "starter.safetensors",
        "stained.tif": "stained_starter.safetensors",
    }
