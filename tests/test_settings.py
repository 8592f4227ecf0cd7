"""The training settings the preview docks show are the ones saved with the model."""

from __future__ import annotations

import json

import numpy as np

from napari_unet.core.augment import AugmentConfig
from napari_unet.core.data import TrainingData
from napari_unet.core.settings import TrainingSettings, WeightSettings
from napari_unet.core.synthetic import touching_cells
from napari_unet.core.train import TrainConfig, TrainResult, train


def test_settings_survive_the_model_file_json():
    settings = TrainingSettings(
        weights=WeightSettings(w0=3.0, sigma_px=2.5, balance=False, max_class_weight=2.0),
        augment=AugmentConfig.off(elastic=True, sigma_px=4.0),
        unpainted="ignore",
    )
    stored = json.loads(json.dumps({"training": {"settings": settings.to_metadata()}}))
    assert TrainingSettings.from_metadata(stored) == settings
    off = TrainingSettings(augment=None)
    assert TrainingSettings.from_metadata({"training": {"settings": off.to_metadata()}}) == off
    # an older model file: only training.augment was stored
    older = {"training": {"augment": {"elastic": False, "rotate_deg": 5.0, "scale": [1, 1]}}}
    restored = TrainingSettings.from_metadata(older)
    assert restored.augment.elastic is False and restored.augment.rotate_deg == 5.0
    assert restored.augment.scale == (1, 1) and restored.weights == WeightSettings()
    assert (
        "w0 3, sigma 2.5 px" in settings.describe() and "elastic 3x3 / 4 px" in settings.describe()
    )


def test_training_uses_and_records_the_settings():
    image, labels = touching_cells((96, 96), seed=8)
    ws = WeightSettings(w0=0.0, balance=False)
    data = TrainingData.from_arrays(image, labels, weight_settings=ws, validation_fraction=0)
    np.testing.assert_array_equal(data.weights, np.ones_like(data.weights))  # w_c = 1, no border
    augment = AugmentConfig.off(flips=True)
    result = TrainResult()
    config = TrainConfig(steps=1, tile_size=92, device="cpu", augment=augment)
    for _ in train(data, config, result=result):
        pass
    saved = result.metadata["training"]["settings"]
    assert saved["weights"] == {
        "w0": 0.0,
        "sigma_px": 5.0,
        "balance": False,
        "max_class_weight": 5.0,
    }
    assert saved["augment"]["flips"] is True and saved["augment"]["elastic"] is False
    assert TrainingSettings.from_metadata(result.metadata).weights == ws
