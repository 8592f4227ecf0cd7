"""The docks and the CLI run the same core job functions (`core.train.training_job`,
`core.predict.prediction_job`): one path per job, the same model files out of both."""

from __future__ import annotations

import numpy as np
import pytest

from _threshold_model import threshold_unet
from napari_unet.core import checkpoint, io
from napari_unet.core import predict as core_predict
from napari_unet.core import train as core_train
from napari_unet.core.events import run_to_end
from napari_unet.core.synthetic import touching_cells
from napari_unet.widgets import _session
from test_predict import METADATA, _squares

SIDE_PX = 96
TINY_RUN = {"steps": 2, "tile_size": 92, "batch_size": 1, "validate_every": 1, "device": "cpu"}


def _spy(monkeypatch, module, name: str) -> list[tuple]:
    """Record every call of ``module.name`` (still running the real function)."""
    calls: list[tuple] = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(module, name, spy)
    return calls


def _key_tree(metadata: dict) -> dict:
    """The metadata's keys, one level down (values differ from run to run: timings)."""
    return {k: sorted(v) if isinstance(v, dict) else None for k, v in metadata.items()}


@pytest.fixture
def cells(tmp_path):
    image, labels = touching_cells((SIDE_PX, SIDE_PX), seed=5)
    return image, labels, io.write(tmp_path / "i.tif", image), io.write(tmp_path / "l.tif", labels)


def test_cli_train_runs_the_core_job_and_writes_its_metadata(monkeypatch, tmp_path, cells):
    from napari_unet._cli import main

    image, labels, image_path, labels_path = cells
    calls = _spy(monkeypatch, core_train, "training_job")
    out = tmp_path / "m.safetensors"
    args = ["train", str(image_path), str(labels_path), "-o", str(out), "--steps", "2"]
    args += ["--preset", "light"]  # a new model, as the direct job below
    assert main([*args, "--tile-size", "92", "--validate-every", "1", "--device", "cpu"]) == 0
    assert len(calls) == 1
    _, written = checkpoint.load(out)

    direct = run_to_end(core_train.training_job(image, labels, dict(TINY_RUN, preset="light")))
    assert isinstance(direct, core_train.Trained)
    direct_written = checkpoint.read_metadata(direct.save(tmp_path / "direct.safetensors"))
    assert _key_tree(written) == _key_tree(direct_written)
    for key in ("steps_done", "tile_size", "optimizer", "preset", "annotated_slices"):
        assert written["training"][key] == direct.metadata["training"][key]
    assert written["architecture"] == direct.metadata["architecture"]


def test_train_dock_runs_the_core_job_and_publishes_its_metadata(
    monkeypatch, make_napari_viewer, qtbot, cells
):
    from napari_unet.widgets.train import TrainDock

    image, labels, _, _ = cells
    calls = _spy(monkeypatch, core_train, "training_job")
    _session.clear()
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells labels")
    dock = TrainDock(viewer)
    dock.model_combo.setCurrentText("new light model")
    dock.steps.setValue(2)
    dock.tile_size.setValue(92)
    dock.batch_size.setValue(1)
    dock.validate_every.setValue(1)
    dock.device.setCurrentText("cpu")
    dock.start()
    qtbot.waitUntil(lambda: not dock.jobs.busy, timeout=180_000)
    assert len(calls) == 1
    published = _session.current_model()[1]
    _session.clear()

    direct = run_to_end(core_train.training_job(image, labels, dict(TINY_RUN, preset="light")))
    assert _key_tree(published) == _key_tree(direct.metadata)
    assert published["training"]["steps_done"] == direct.metadata["training"]["steps_done"] == 2


def test_cli_and_dock_predict_through_the_core_job(
    monkeypatch, make_napari_viewer, qtbot, tmp_path
):
    from napari_unet._cli import main
    from napari_unet.widgets.predict import FILE, PredictDock

    calls = _spy(monkeypatch, core_predict, "prediction_job")
    image, expected = _squares(0)
    model = checkpoint.save(tmp_path / "t.safetensors", threshold_unet(), METADATA)
    io.write(tmp_path / "i.tif", image)
    args = [str(model), str(tmp_path / "i.tif"), "-o", str(tmp_path / "out.tif")]
    assert main(["predict", *args, "--tile-size", "60", "--min-size", "4", "--device", "cpu"]) == 0

    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    dock = PredictDock(viewer)
    dock.model_combo.setCurrentText(FILE)
    dock.model_path.setText(str(model))
    dock.tile_size.setValue(60)
    dock.min_size.setValue(4)
    dock.run_button.click()
    qtbot.waitUntil(lambda: not dock.jobs.busy and dock.run_button.isEnabled(), timeout=30_000)

    assert len(calls) == 2
    assert [str(c[0][0]) for c in calls] == [str(model)] * 2
    np.testing.assert_array_equal(
        io.read(tmp_path / "out.tif"), viewer.layers["cells U-Net labels"].data
    )


def test_setting_stop_ends_the_job_after_the_current_step_with_the_best_model():
    import threading

    image, labels = touching_cells((SIDE_PX, SIDE_PX), seed=5)
    stop = threading.Event()
    job = core_train.training_job(image, labels, dict(TINY_RUN, steps=500), stop=stop)
    seen = []
    trained = run_to_end(job, lambda e: (seen.append(e), stop.set()))
    assert [type(e).__name__ for e in seen] == ["Step"]
    assert trained.stopped and trained.steps_done == 1 and not trained.net.training
    assert trained.metadata["training"]["stopped_early"]


def test_stop_during_preparation_ends_before_the_starters_are_scored(monkeypatch):
    """Scoring each shipped starter and the sparse-painting hint take seconds before the
    first step; Stop pressed then ends the job there, with nothing trained."""
    import threading

    from napari_unet.models import phase_starter_model_path, starter_model_path

    def never(*args, **kwargs):
        raise AssertionError("the starters were scored after Stop")

    monkeypatch.setattr(core_train, "choose_start", never)
    image, labels = touching_cells((SIDE_PX, SIDE_PX), seed=5)
    stop = threading.Event()
    stop.set()
    starters = [str(starter_model_path()), str(phase_starter_model_path())]
    job = core_train.training_job(image, labels, TINY_RUN, start_from=starters, stop=stop)
    seen = []
    assert run_to_end(job, seen.append) is None
    assert seen == []


def test_the_cli_and_the_train_dock_offer_the_preset_tables(make_napari_viewer):
    import argparse

    from napari_unet._cli import build_parser
    from napari_unet.core.presets import DEVICES, MODEL_PRESETS, OPTIMIZERS
    from napari_unet.widgets.train import MODELS, TrainDock, new_model_choice

    commands = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    train_options = {a.dest: a for a in commands.choices["train"]._actions}
    assert list(train_options["preset"].choices) == list(MODEL_PRESETS)
    assert list(train_options["optimizer"].choices) == list(OPTIMIZERS)
    for command in ("train", "predict"):
        help_text = {a.dest: a.help for a in commands.choices[command]._actions}["device"]
        assert all(name in help_text for name in DEVICES)

    dock = TrainDock(make_napari_viewer())
    offered = [dock.model_combo.itemText(i) for i in range(dock.model_combo.count())]
    assert offered[: len(MODEL_PRESETS)] == [new_model_choice(p) for p in MODEL_PRESETS]
    assert [MODELS[text] for text in offered[: len(MODEL_PRESETS)]] == list(MODEL_PRESETS)
    assert [dock.device.itemText(i) for i in range(dock.device.count())] == list(DEVICES)
