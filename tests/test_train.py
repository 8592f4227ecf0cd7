"""Training learns on synthetic cells, ignores unannotated pixels, stops cleanly, resumes."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import napari_unet.core.train as core_train
from napari_unet.core import checkpoint
from napari_unet.core.augment import AugmentConfig
from napari_unet.core.data import TrainingData
from napari_unet.core.events import run_to_end
from napari_unet.core.io import InputError
from napari_unet.core.model import UNet
from napari_unet.core.presets import ANCHOR
from napari_unet.core.synthetic import touching_cells
from napari_unet.core.train import (
    Step,
    TrainConfig,
    TrainResult,
    Validation,
    lr_factor,
    train,
    weighted_cross_entropy,
)

TINY = {"base_channels": 8, "depth": 3, "dropout": 0.0}


def _run(events):
    """Pull a generator to its end: (events, return value)."""
    seen = []
    return seen, run_to_end(events, seen.append)


@pytest.fixture(scope="module")
def cells_data() -> TrainingData:
    image, labels = touching_cells((192, 192), seed=4)
    return TrainingData.from_arrays(image, labels)


def _config(**changes) -> TrainConfig:
    settings = dict(steps=6, tile_size=92, batch_size=1, validate_every=3, device="cpu", seed=0)
    settings.update(changes)
    return TrainConfig(**settings)


def test_weighted_cross_entropy_matches_a_hand_computation():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (B=1, K=2, 1, 2 pixels)
    target = torch.tensor([[[0, 1]]])
    weights = torch.tensor([[[3.0, 1.0]]])
    p0 = math.exp(2) / (math.exp(2) + 1)  # softmax of the true class, pixel 0
    p1 = math.exp(1) / (math.exp(1) + 1)
    expected = (3 * -math.log(p0) + 1 * -math.log(p1)) / 4
    assert float(weighted_cross_entropy(logits, target, weights)) == pytest.approx(expected)


def test_ignored_pixels_give_no_loss_and_no_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    target = torch.randint(0, 2, (2, 8, 8))
    weights = torch.rand(2, 8, 8) + 0.5
    weights[:, :4] = 0  # the top half is unannotated
    loss = weighted_cross_entropy(logits, target, weights)
    loss.backward()
    assert torch.all(logits.grad[:, :, :4] == 0)
    assert torch.all(logits.grad[:, :, 4:].abs().sum(dim=1) > 0)
    flipped = target.clone()
    flipped[:, :4] = 1 - flipped[:, :4]  # any target there: same loss
    with torch.no_grad():
        assert float(weighted_cross_entropy(logits, flipped, weights)) == pytest.approx(
            float(loss)
        )


def test_learning_rate_warms_up_then_decays():
    assert lr_factor(0.0) < 0.05
    assert lr_factor(0.05) == pytest.approx(1.0)
    assert lr_factor(0.5) < 1.0
    assert lr_factor(1.0) == pytest.approx(0.02)
    values = [lr_factor(t / 100) for t in range(5, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.slow
def test_training_from_scratch_clearly_improves_validation_iou():
    image, labels = touching_cells((256, 256), seed=1)
    data = TrainingData.from_arrays(image, labels)
    torch.manual_seed(0)
    flips_only = AugmentConfig.off(flips=True, rot90=True)  # cheap; converges in fewer steps
    config = _config(steps=100, batch_size=2, validate_every=50, lr=5e-3, augment=flips_only)
    events, result = _run(train(data, config, net=UNet(**TINY)))
    validations = [e for e in events if isinstance(e, Validation)]
    steps = [e for e in events if isinstance(e, Step)]
    assert [v.step for v in validations] == [1, 50, 100]
    assert [s.step for s in steps] == list(range(1, 101))
    assert all(s.total == 100 and s.tiles_per_s > 0 and s.lr > 0 for s in steps)
    first, best = validations[0], max(validations, key=lambda v: v.iou)
    assert best.iou > first.iou + 0.3
    assert best.iou > 0.75
    assert result.best_iou == best.iou and result.best_step == best.step
    assert validations[0].preview.shape == (
        data.validation.y1 - data.validation.y0,
        data.validation.x1 - data.validation.x0,
    )
    assert validations[-1].preview.min() >= 0 and validations[-1].preview.max() <= 1
    assert validations[-1].ap50 is None or 0 <= validations[-1].ap50 <= 1
    # the returned net is the best one: its IoU on the hold-out is the best validation's
    assert not result.net.training
    assert result.metadata["validation"]["iou"] == pytest.approx(best.iou)
    assert len(result.metadata["training"]["history"]) == 100


def test_closing_mid_run_keeps_a_usable_best_model(tmp_path, cells_data):
    result = TrainResult()
    events = train(cells_data, _config(steps=1000), net=UNet(**TINY), result=result)
    validations = []
    for event in events:
        if isinstance(event, Validation):
            validations.append(event)
        if isinstance(event, Step) and event.step == 4:
            break
    events.close()
    assert result.stopped_early
    assert result.steps_done == 4
    best = max(validations, key=lambda v: v.iou)  # validated after steps 1 and 3
    assert [v.step for v in validations] == [1, 3]
    assert (result.best_step, result.best_iou) == (best.step, best.iou)
    assert result.net is not None and not result.net.training
    with torch.no_grad():
        out = result.net(torch.rand(1, 1, 92, 92))
    assert out.shape == (1, 2, 52, 52) and torch.isfinite(out).all()
    path = result.trained().save(tmp_path / "stopped.safetensors")
    loaded, meta = checkpoint.load(path)
    assert meta["training"]["steps_done"] == 4 and meta["training"]["stopped_early"]
    assert meta["normalisation"]["percentiles"] == [1.0, 99.8]
    with torch.no_grad():
        assert torch.equal(loaded(torch.ones(1, 1, 92, 92)), result.net(torch.ones(1, 1, 92, 92)))


def test_fine_tune_from_a_model_file_starts_from_its_weights(tmp_path, cells_data):
    _, first = _run(train(cells_data, _config(steps=3), net=UNet(**TINY)))
    path = first.trained().save(tmp_path / "first.safetensors")
    start, _ = checkpoint.load(path)
    events, second = _run(train(cells_data, _config(steps=2, lr=1e-12), net=path))
    assert second.metadata["training"]["from"] == "first.safetensors"
    assert second.metadata["training"]["from_steps"] == 3
    # with a vanishing learning rate, the fine-tuned weights stay those of the file
    for a, b in zip(start.state_dict().values(), second.net.state_dict().values(), strict=True):
        assert torch.allclose(a, b.cpu(), atol=1e-6)


@pytest.mark.slow
def test_same_seed_same_run_and_sgd_works(cells_data):
    def run(**changes):
        torch.manual_seed(123)
        events, result = _run(
            train(cells_data, _config(steps=4, validate_every=100, **changes), net=UNet(**TINY))
        )
        return [e.loss for e in events if isinstance(e, Step)], result

    assert run()[0] == run()[0]
    sgd, result = run(optimizer="sgd", lr=1e-3, augment=None)
    assert len(sgd) == 4 and all(np.isfinite(sgd))
    assert result.metadata["training"]["optimizer"] == "sgd"
    assert result.metadata["training"]["augment"] is None


def test_time_budget_stops_early_and_validates_the_last_weights(cells_data):
    events, result = _run(
        train(
            cells_data,
            _config(steps=10_000, max_minutes=0.02, validate_every=10_000),
            UNet(**TINY),
        )
    )
    assert result.stopped_early and 1 <= result.steps_done < 10_000
    validations = [e.step for e in events if isinstance(e, Validation)]
    assert validations[0] == 1 and validations[-1] == result.steps_done


def test_a_new_model_follows_the_preset_and_the_data(cells_data):
    two_channel_three_classes = TrainingData.from_arrays(
        np.stack([cells_data.images[0, 0]] * 2, axis=-1),
        cells_data.labels[0],
        channels=2,
        n_classes=3,
    )
    config = _config(steps=1, augment=AugmentConfig.off(), preset="light")
    _, result = _run(train(two_channel_three_classes, config))
    assert result.net.config["in_channels"] == 2
    assert result.net.config["n_classes"] == 3
    assert result.net.config["base_channels"] == 16
    assert result.metadata["classes"] == ["background", "cell", "border"]


def test_bad_settings_and_mismatched_models_give_clear_errors(cells_data):
    with pytest.raises(InputError, match="optimizer"):
        next(train(cells_data, _config(optimizer="rmsprop"), net=UNet(**TINY)))
    with pytest.raises(InputError, match="2 input channel"):
        next(train(cells_data, _config(), net=UNet(in_channels=2, **TINY)))
    with pytest.raises(InputError, match="3 classes"):
        next(train(cells_data, _config(), net=UNet(n_classes=3, **TINY)))
    with pytest.raises(InputError, match="no such model file"):
        next(train(cells_data, _config(), net="missing.safetensors"))
    with pytest.raises(InputError, match="steps must be at least 1"):
        next(train(cells_data, _config(steps=0), net=UNet(**TINY)))
    with pytest.raises(InputError, match="select_by"):
        next(train(cells_data, _config(select_by="dice"), net=UNet(**TINY)))


def test_select_by_ap50_keeps_the_best_instances_not_the_best_iou(cells_data):
    """With select_by="ap50" the kept step is the one of highest validation AP@0.5."""
    result = TrainResult()
    for _ in train(
        cells_data, _config(steps=6, validate_every=2, select_by="ap50"), result=result
    ):
        pass
    history = result.metadata["validation"]["history"]
    best = max(history, key=lambda v: (v["ap50"], v["iou"], -v["loss"]))
    assert result.best_step == best["step"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_in_bf16_channels_last(cells_data):
    events, result = _run(train(cells_data, _config(device="cuda", steps=4), net=UNet(**TINY)))
    assert all(np.isfinite(e.loss) for e in events if isinstance(e, Step))
    assert result.metadata["training"]["device"].startswith("cuda")


# --- command line ------------------------------------------------------------------


def _write_cells(tmp_path, shape=(128, 128)):
    from napari_unet.core import io

    image, labels = touching_cells(shape, seed=5)
    return io.write(tmp_path / "image.tif", image), io.write(tmp_path / "labels.tif", labels)


@pytest.mark.slow
def test_of_several_start_models_the_one_that_finds_the_cells_is_fine_tuned(tmp_path):
    """Several model files (as the shipped starters are offered): the one that already
    segments the held-out annotations best is trained on, and the run says so."""
    from napari_unet.core.train import choose_start, training_job
    from napari_unet.models import starter_model_path

    image, labels = touching_cells((192, 192), seed=4)
    data = TrainingData.from_arrays(image, labels, n_classes=3)
    _, untrained = _run(train(data, _config(steps=1, lr=1e-12, preset="light"), net=None))
    blank = untrained.trained().save(tmp_path / "blank.safetensors")  # finds no cells yet
    starter = str(starter_model_path())

    chosen, scores = choose_start([blank, starter], data, _config())
    assert chosen == starter  # not merely the first
    assert scores["starter.safetensors"] > scores["blank.safetensors"] + 0.3
    without_hold_out = TrainingData.from_arrays(image, labels, n_classes=3, validation_fraction=0)
    assert choose_start([blank, starter], without_hold_out, _config()) == (str(blank), {})

    done = run_to_end(training_job(image, labels, _config(steps=2), start_from=[blank, starter]))
    training = done.metadata["training"]
    assert training["from"] == "starter.safetensors"
    assert training["start_scores"] == scores  # the same hold-out, the same scores
    assert training["start_iou"] == pytest.approx(scores["starter.safetensors"], abs=1e-4)
    assert "Started from starter.safetensors" in done.note()


def test_start_models_compete_only_when_they_take_the_image_channels(tmp_path):
    """A colour model cannot start a gray image; on colour, a colour model comes before
    one-channel models that would be spread (the first candidate without a hold-out)."""
    from napari_unet.core.model import UNet
    from napari_unet.core.train import choose_start

    def model_file(name: str, channels: int) -> str:
        net = UNet(in_channels=channels, n_classes=3, base_channels=4, depth=2)
        return str(checkpoint.save(tmp_path / name, net, {"architecture": net.config}))

    gray, rgb = model_file("gray.safetensors", 1), model_file("rgb.safetensors", 3)
    image, labels = touching_cells((128, 128), seed=4)
    gray_data = TrainingData.from_arrays(image, labels, n_classes=3)
    chosen, scores = choose_start([rgb, gray], gray_data, _config())
    assert chosen == gray and set(scores) <= {"gray.safetensors"}
    colour = np.stack([image, image, image])
    rgb_data = TrainingData.from_arrays(colour, labels, n_classes=3, channels=3,
                                        validation_fraction=0)  # fmt: skip
    assert choose_start([gray, rgb], rgb_data, _config()) == (rgb, {})
    two = TrainingData.from_arrays(colour[:2], labels, n_classes=3, channels=2)
    assert choose_start([rgb, gray], two, _config())[0] == gray  # spread; rgb cannot


def test_a_colour_starter_wins_unless_a_spread_one_is_clearly_better(monkeypatch):
    """On colour, the starter that takes the channels is kept when a one-channel starter
    spread over them scores only a little more (`EXACT_CHANNELS_MARGIN`), not when it
    finds the cells clearly better."""
    from napari_unet.core import train as core
    from napari_unet.core.presets import EXACT_CHANNELS_MARGIN

    image, labels = touching_cells((128, 128), seed=4)
    data = TrainingData.from_arrays(np.stack([image] * 3), labels, n_classes=3, channels=3)
    channels = {"gray": 1, "rgb": 3}
    monkeypatch.setattr(
        core.checkpoint,
        "read_metadata",
        lambda p: {"architecture": {"in_channels": channels[str(p)]}},
    )
    monkeypatch.setattr(core, "_initial_net", lambda p, d, c: (p, {}))
    for lead, winner in ((EXACT_CHANNELS_MARGIN / 2, "rgb"), (EXACT_CHANNELS_MARGIN * 2, "gray")):
        ious = {"rgb": 0.5, "gray": 0.5 + lead}
        monkeypatch.setattr(
            core,
            "validate",
            lambda net, *a, ious=ious: core.Validation(0, 0.0, ious[net], None, None, None, False),
        )
        assert core.choose_start(["gray", "rgb"], data, _config())[0] == winner


def test_cli_train_writes_a_model_that_loads(tmp_path, capsys):
    from napari_unet._cli import main

    image, labels = _write_cells(tmp_path)
    out = tmp_path / "model.safetensors"
    args = [str(image), str(labels), "-o", str(out), "--steps", "3", "--tile-size", "96"]
    assert main(["train", *args, "--device", "cpu", "--validate-every", "2"]) == 0
    net, meta = checkpoint.load(out)
    assert meta["training"]["steps_done"] == 3
    assert meta["architecture"]["base_channels"] == 16  # the light preset on CPU
    # gray nuclei-like cells: of the shipped starters, the nuclei one finds them best
    assert meta["training"]["from"] == "starter.safetensors"
    assert meta["training"]["start_scores"]["starter.safetensors"] == max(
        meta["training"]["start_scores"].values()
    )
    assert meta["validation"]["step"] in (0, 1, 2, 3)
    err = capsys.readouterr().err
    assert "saved" in err and "Started from starter.safetensors" in err
    assert f"trained on: {meta['training']['annotation']}" in err
    # --preset asks for a new model
    new = tmp_path / "new.safetensors"
    assert main(["train", *args[:2], "-o", str(new), *args[4:], "--preset", "light"]) == 0
    assert not checkpoint.read_metadata(new)["training"].get("from")
    # fine-tune it again from the file
    again = tmp_path / "again.safetensors"
    assert main(["train", str(image), str(labels), "-o", str(again), "--steps", "1",
                 "--tile-size", "96", "--from", str(out)]) == 0  # fmt: skip
    assert checkpoint.load(again)[1]["training"]["from"] == "model.safetensors"
    # or from the shipped nuclei starter, by name
    tuned = tmp_path / "tuned.safetensors"
    assert main(["train", str(image), str(labels), "-o", str(tuned), "--steps", "1",
                 "--tile-size", "96", "--from", "starter"]) == 0  # fmt: skip
    assert checkpoint.load(tuned)[1]["training"]["from"] == "starter.safetensors"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("float_labels", "labels must be an integer image"),
        ("empty_labels", "nothing is annotated"),
        ("wrong_shape", "has shape"),
        ("bad_suffix", "ends in .safetensors"),
        ("no_such_model", "no such model file"),
    ],
)
def test_cli_train_bad_input_exits_2_with_one_line(tmp_path, capsys, change, message):
    from napari_unet._cli import main
    from napari_unet.core import io

    image, labels = _write_cells(tmp_path, (64, 64))
    out, extra = tmp_path / "m.safetensors", []
    if change == "float_labels":
        io.write(labels, io.read(labels).astype(np.float32))
    elif change == "empty_labels":
        io.write(labels, np.zeros((64, 64), np.uint16))
    elif change == "wrong_shape":
        io.write(labels, np.ones((64, 32), np.uint16))
    elif change == "bad_suffix":
        out = tmp_path / "m.tif"
    else:
        extra = ["--from", str(tmp_path / "missing.safetensors")]
    code = main(["train", str(image), str(labels), "-o", str(out), "--steps", "1", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("napari-unet train: error:") and message in err[0]
    assert not (tmp_path / "m.safetensors").exists()


def test_out_of_memory_fallback_halves_the_batch_then_shrinks_the_tile(cells_data):
    from napari_unet.core.train import _Tiles

    tiles = _Tiles(cells_data, UNet(**TINY), tile_size=172, batch_size=4, seed=0)
    sizes = [(tiles.batch_size, tiles.sampler.in_size)]
    while tiles.shrink():
        sizes.append((tiles.batch_size, tiles.sampler.in_size))
    assert sizes[:3] == [(4, 172), (2, 172), (1, 172)]
    assert [s for _, s in sizes[2:]] == sorted({s for _, s in sizes[2:]}, reverse=True)
    assert sizes[-1] == (1, 44)  # the smallest valid tile of a depth-3 U-Net


def test_validation_scores_equal_tiled_prediction_and_metrics_of_the_best_net(cells_data):
    """The hold-out is scored through `tiling.predict_tiled` (the image around it as
    context) with the training loss; recompute it all by hand from the returned net."""
    from napari_unet.core import metrics, postprocess, tiling
    from napari_unet.core.train import VALIDATION_TILE_PX

    events, result = _run(train(cells_data, _config(steps=1), net=UNet(**TINY)))
    (validation,) = [e for e in events if isinstance(e, Validation)]
    region = cells_data.validation
    box = (region.y0, region.x0, region.y1, region.x1)
    probs = tiling.predict_tiled(
        result.net, cells_data.images[region.index], VALIDATION_TILE_PX, 1, "cpu", region=box
    )
    rows, cols = slice(region.y0, region.y1), slice(region.x0, region.x1)
    target = cells_data.targets[region.index, rows, cols]
    weights = cells_data.validation_weights
    mask = region.mask
    cell, predicted = (target == 1) & mask, (probs[1] > 0.5) & mask
    iou = np.count_nonzero(cell & predicted) / np.count_nonzero(cell | predicted)
    picked = np.take_along_axis(probs, target[None].astype(np.int64), axis=0)[0]
    loss = float((-np.log(picked) * weights).sum() / weights.sum())
    labels = cells_data.labels[region.index, rows, cols] * mask
    ap50 = metrics.average_precision(labels, postprocess.to_instances(probs) * mask, (0.5,))[0]
    assert validation.iou == pytest.approx(iou, abs=1e-12)
    assert validation.iou == pytest.approx(metrics.iou_score(cell, predicted), abs=1e-12)
    assert validation.loss == pytest.approx(loss, rel=1e-5)
    assert validation.ap50 == pytest.approx(ap50)
    np.testing.assert_array_equal(validation.preview, probs[1])
    assert validation.region == (region.slice_index, *box)


def test_the_anchor_keeps_fine_tuning_near_the_start_model(tmp_path, cells_data, monkeypatch):
    """Fine-tuned from a file the weights are pulled back toward the file's (on by
    default); Adam's steps of ~lr then leave each weight within a few / anchor of its
    start, while without the anchor the same run drifts further."""
    _, first = _run(train(cells_data, _config(steps=2), net=UNet(**TINY)))
    assert first.metadata["training"]["anchor"] == 0  # a net in memory: no anchor
    path = first.trained().save(tmp_path / "start.safetensors")
    start, _ = checkpoint.load(path)

    def drift(anchor):
        """Largest change of a weight after the run (its last weights, not the best)."""
        config = _config(
            steps=30, validate_every=100, validate_every_s=600, lr=2e-2, anchor=anchor
        )
        _, result = _run(train(cells_data, config, net=path))
        last = result.resume.weights
        pairs = [(w, last[name]) for name, w in start.state_dict().items()]
        return max(float((a - b).abs().max()) for a, b in pairs), result

    free, _ = drift(0)
    anchored, result = drift(100.0)
    assert result.metadata["training"]["anchor"] == 100.0
    assert anchored < 4 / 100.0 < free
    # by default it holds a start model that already finds the cells (validation IoU
    # before any step >= ANCHOR_MIN_IOU) and lets go of one that does not
    monkeypatch.setattr(core_train, "ANCHOR_MIN_IOU", 0.0)
    _, default = _run(train(cells_data, _config(steps=1), net=path))
    assert default.metadata["training"]["anchor"] == ANCHOR
    start_iou = default.metadata["training"]["start_iou"]
    assert start_iou == default.metadata["validation"]["history"][0]["iou"]
    monkeypatch.setattr(core_train, "ANCHOR_MIN_IOU", start_iou + 0.01)
    _, released = _run(train(cells_data, _config(steps=1), net=path))
    assert released.metadata["training"]["anchor"] == 0
    # and says so when it finishes (unless the start model itself is kept)
    note = dataclasses.replace(released.trained(), kept_start=False).note()
    assert f"IoU {start_iou:.2f} before training" in note and "free to move" in note
    assert dataclasses.replace(default.trained(), kept_start=False).note() == ""
    with pytest.raises(InputError, match="anchor"):
        next(train(cells_data, _config(anchor=-1.0), net=path))
