"""The shipped phase-contrast starter: a small file that segments real phase-contrast
cells it never saw (where the nuclei starter finds almost nothing), offered in the docks,
and chosen for such images when training starts from the best starter.

Fixture: a 384x384 crop of slice 5 of the usiigaci stack (MIT; see tests/data/README.md),
a slice held out from the phase starter's training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet.core import io, metrics
from napari_unet.core.data import TrainingData
from napari_unet.core.events import run_to_end
from napari_unet.core.predict import PredictConfig, prediction_job
from napari_unet.core.train import TrainConfig, choose_start
from napari_unet.models import phase_starter_model_path, starter_model_path
from test_starter_model import small_light_starter_metadata

DATA = Path(__file__).with_name("data")
HELD_OUT_SLICE = 5
# sanity floors, not the accuracy claim (docs/accuracy.md "Accuracy on real images")
FG_IOU_MIN, NUCLEI_STARTER_FG_IOU_MAX = 0.6, 0.3


@pytest.fixture(scope="module")
def phase_crop() -> tuple[np.ndarray, np.ndarray]:
    return (
        io.read(DATA / "usiigaci_phase_s5_crop.tif"),
        io.read(DATA / "usiigaci_phase_s5_crop_labels.tif"),
    )


def _foreground_iou(model: Path, image: np.ndarray, truth: np.ndarray) -> float:
    labels = run_to_end(prediction_job(model, image, PredictConfig(device="cpu"))).labels
    return metrics.iou_score(truth > 0, labels > 0)


def test_phase_starter_is_a_small_light_model_with_its_record():
    metadata = small_light_starter_metadata(phase_starter_model_path())
    record = metadata["starter"]
    assert HELD_OUT_SLICE not in record["training_slices"] and len(record["training_slices"]) >= 20
    assert "MIT" in record["licence"]
    assert 0.0 < record["scores_held_out"]["fg_iou"] <= 1.0
    assert metadata["normalisation"]["scale"] < 1.0  # large cells are shrunk for the network


def test_phase_starter_finds_phase_contrast_cells_the_nuclei_starter_misses(phase_crop):
    image, truth = phase_crop
    assert _foreground_iou(phase_starter_model_path(), image, truth) > FG_IOU_MIN
    assert _foreground_iou(starter_model_path(), image, truth) < NUCLEI_STARTER_FG_IOU_MAX


def test_the_best_starter_for_phase_contrast_is_the_phase_one(phase_crop):
    image, truth = phase_crop
    data = TrainingData.from_pairs([(image, truth)], n_classes=3)  # as training builds it
    phase, nuclei = str(phase_starter_model_path()), str(starter_model_path())
    chosen, scores = choose_start([nuclei, phase], data, TrainConfig(device="cpu"))
    assert chosen == phase
    assert scores["phase_starter.safetensors"] > scores["starter.safetensors"] + 0.2
