"""No work thrown away: Stop validates the last weights, Resume continues with the
optimiser state, fine-tuning says when nothing beat the starting model; stable steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core import checkpoint
from napari_unet.core.data import TrainingData
from napari_unet.core.events import run_to_end
from napari_unet.core.model import UNet
from napari_unet.core.synthetic import touching_cells
from napari_unet.core.train import (
    GRAD_CLIP_AFTER,
    MAX_VALIDATION_SHARE,
    ResumeState,
    Step,
    TrainConfig,
    TrainResult,
    Validation,
    train,
)

TINY = {"base_channels": 8, "depth": 3, "dropout": 0.0}


@pytest.fixture(scope="module")
def cells_data() -> TrainingData:
    image, labels = touching_cells((160, 160), seed=9)
    return TrainingData.from_arrays(image, labels)


def _config(**changes) -> TrainConfig:
    settings = dict(steps=30, tile_size=92, device="cpu", seed=0, validate_every=1000)
    settings.update(changes)
    return TrainConfig(**settings)


def _events(gen):
    """Pull a generator to its end: (events, return value)."""
    seen = []
    return seen, run_to_end(gen, seen.append)


def _biased_starter() -> UNet:
    """The starter model told to call everything background: training soon fixes it."""
    from napari_unet.models import starter_model_path

    net, _ = checkpoint.load(starter_model_path())
    with torch.no_grad():
        net.head.bias[1:] -= 20.0  # cell (and border) logits
    return net


def test_stop_validates_the_last_weights_and_keeps_them_when_better():
    image, labels = touching_cells((160, 160), seed=9)
    starter = _biased_starter()
    data = TrainingData.from_arrays(image, labels, n_classes=starter.n_classes)
    result = TrainResult()
    job = train(data, _config(steps=1000, lr=5e-3), net=starter, result=result)
    for event in job:
        if isinstance(event, Step) and event.step == 15:
            break
    job.close()  # the dock's Stop
    history = result.metadata["validation"]["history"]
    assert [v["step"] for v in history] == [1, 15]  # step 1, then once more on Stop
    assert history[1]["iou"] > history[0]["iou"] + 0.2  # the last weights are better
    assert result.best_step == 15 and result.net is not None
    assert result.resume is not None and result.resume.steps_done == 15


def test_resume_continues_from_the_last_weights_with_the_optimiser_state(cells_data):
    torch.manual_seed(0)
    first_events, first = _events(train(cells_data, _config(steps=30), net=UNet(**TINY)))
    losses = [e.loss for e in first_events if isinstance(e, Step)]
    assert first.resume.optimizer["state"][0]["step"] == 30  # AdamW's own step count
    again_events, again = _events(
        train(cells_data, _config(steps=10), net=first.net, resume=first.resume)
    )
    resumed = [e.loss for e in again_events if isinstance(e, Step)]
    # the loss goes on from where it was, not back to the start (no second warm-up)
    assert np.mean(resumed[:5]) < np.mean(losses[:5]) - 0.05
    assert np.mean(resumed[:5]) < 1.3 * np.mean(losses[-5:])
    assert again.resume.optimizer["state"][0]["step"] == 40  # the moments carried on
    assert again.metadata["training"]["resumed"] is True
    # the last weights, not the best ones, were the starting point
    last = first.resume.weights
    assert not all(torch.equal(last[k], v) for k, v in first.best_net().state_dict().items()) or (
        first.best_step == 30
    )


def test_resume_state_saved_beside_the_model_loads_back(tmp_path, cells_data):
    _, result = _events(train(cells_data, _config(steps=3), net=UNet(**TINY)))
    written = result.trained().save(tmp_path / "m.safetensors")
    state = ResumeState.load(checkpoint.resume_path(written))
    assert state.steps_done == 3 and state.optimizer_name == "adamw"
    for key, value in result.resume.weights.items():
        assert torch.equal(state.weights[key], value)
    _, again = _events(train(cells_data, _config(steps=2), net=written, resume=state))
    assert again.resume.optimizer["state"][0]["step"] == 5


def test_a_resumed_run_keeps_its_anchor_on_the_first_start(tmp_path, cells_data):
    """Fine-tuning a saved model is anchored to it; Stop, save, Resume: the continuation
    is still pulled toward that first start, not toward the model it resumes."""
    torch.manual_seed(0)
    _, start = _events(train(cells_data, _config(steps=5), net=UNet(**TINY)))
    start_file = start.trained().save(tmp_path / "start.safetensors")
    first_weights = checkpoint.load(start_file)[0].state_dict()
    # an explicit anchor stays on (the default lets go of a start this unfit)
    _, first = _events(train(cells_data, _config(steps=20, lr=5e-3, anchor=1.0), net=start_file))
    assert first.metadata["training"]["anchor"] > 0
    resumed_file = first.trained().save(tmp_path / "tuned.safetensors")
    state = ResumeState.load(checkpoint.resume_path(resumed_file))
    assert state.anchor == first.metadata["training"]["anchor"]
    assert state.anchor_to.keys() == dict(UNet(**TINY).named_parameters()).keys()
    for name, value in state.anchor_to.items():
        assert torch.equal(value, first_weights[name])
    tuned = checkpoint.load(resumed_file)[0].state_dict()
    assert any(not torch.equal(tuned[k], first_weights[k]) for k in state.anchor_to)
    _, again = _events(train(cells_data, _config(steps=3), net=resumed_file, resume=state))
    for name, value in again.resume.anchor_to.items():
        assert torch.equal(value, first_weights[name])  # not the resumed model's weights
    _, fresh = _events(train(cells_data, _config(steps=3), net=UNet(**TINY)))
    assert fresh.resume.anchor_to is None  # a new model has no anchor


def test_fine_tuning_says_when_the_starting_model_stays_best(tmp_path, cells_data):
    torch.manual_seed(0)
    _, first = _events(train(cells_data, _config(steps=20), net=UNet(**TINY)))
    path = first.trained().save(tmp_path / "start.safetensors")
    events, frozen = _events(train(cells_data, _config(steps=3, lr=1e-12), net=path))
    validations = [e for e in events if isinstance(e, Validation)]
    assert validations[0].step == 0 and validations[0].best  # scored before any step
    assert frozen.best_step == 0 and frozen.kept_start
    assert "kept unchanged" in frozen.trained().note()
    assert frozen.metadata["training"]["kept_start"] is True
    _, learned = _events(train(cells_data, _config(steps=3), net=UNet(**TINY)))
    assert not learned.kept_start and learned.trained().note() == ""  # a new model: no baseline


def test_validation_by_time_in_short_runs_stays_cheap(cells_data):
    config = _config(steps=25, validate_every=None, validate_every_s=1e-3)
    events, result = _events(train(cells_data, config, net=UNet(**TINY)))
    steps = [e.step for e in events if isinstance(e, Validation)]
    assert len(steps) >= 3 and steps[0] == 1 and steps[-1] == 25
    history = result.metadata["training"]
    assert history["steps_done"] == 25
    resolved = TrainConfig(steps=5).resolved("light")
    assert resolved.validate_every_s == 5.0  # auto: by time too
    assert TrainConfig(steps=5, validate_every=2).resolved("light").validate_every_s is None
    assert MAX_VALIDATION_SHARE == 0.25


def test_gradient_clipping_caps_spikes_at_a_multiple_of_the_median(cells_data, monkeypatch):
    import napari_unet.core.train as core_train

    seen = []
    real = core_train._optimise

    def recording(*args):
        loss, norm = real(*args)
        seen.append((args[-1], norm))
        return loss, norm

    monkeypatch.setattr(core_train, "_optimise", recording)
    _, result = _events(train(cells_data, _config(steps=15, grad_clip=2.0), net=UNet(**TINY)))
    limits = [limit for limit, _ in seen]
    assert limits[:GRAD_CLIP_AFTER] == [None] * GRAD_CLIP_AFTER
    norms = [norm for _, norm in seen]
    for i in range(GRAD_CLIP_AFTER, 15):
        assert limits[i] == pytest.approx(2.0 * np.median(norms[:i][-50:]))
    assert result.metadata["training"]["grad_clip"] == 2.0
