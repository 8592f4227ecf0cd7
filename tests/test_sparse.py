"""A few painted cells: only their surroundings and background strokes teach the model."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.data import (
    SPARSE_MAX_COVERAGE,
    TEACHER_UNSURE,
    TEACHER_WEIGHT,
    TrainingData,
    band_px,
    describe_use,
)
from napari_unet.core.settings import TrainingSettings
from napari_unet.core.synthetic import touching_cells


def _paint(truth: np.ndarray, ids) -> np.ndarray:
    """Copy some ground-truth cells into an empty labels layer, as a user would paint."""
    out = np.zeros(truth.shape, dtype=np.uint16)
    for new, old in enumerate(ids, start=1):
        out[truth == old] = new
    return out


def _brute_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel (brute force)."""
    ys, xs = np.nonzero(mask)
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    d = np.full(mask.shape, np.inf)
    for y, x in zip(ys, xs, strict=True):
        np.minimum(d, np.hypot(yy - y, xx - x), out=d)
    return d


@pytest.fixture(scope="module")
def sparse_cells():
    image, truth = touching_cells((128, 128), seed=3)
    ids = np.unique(truth)[1:]
    return image, truth, _paint(truth, ids[:: max(1, len(ids) // 3)][:3])


def test_few_painted_cells_train_only_near_them(sparse_cells):
    image, truth, painted = sparse_cells
    assert np.count_nonzero(painted) / painted.size < SPARSE_MAX_COVERAGE
    # a flat image: the painted area decides (< SPARSE_MAX_COVERAGE: sparse)
    data = TrainingData.from_arrays(np.zeros_like(image), painted, validation_fraction=0)
    assert data.use.sparse_slices == (0,)
    used = data.weights[0] > 0
    near = _brute_distance(painted > 0) <= band_px(painted)
    # a flat image cannot tell cells from background: the whole band is used
    np.testing.assert_array_equal(used, near)
    assert np.all(data.targets[0][used & (painted == 0)] == 0)  # band = background
    assert data.use.used_fraction == pytest.approx(near.mean())
    # painted cells' diameter sets the band: half the median diameter, within limits
    areas = np.bincount(painted.ravel())[1:]
    assert band_px(painted) == round(0.5 * 2 * np.sqrt(np.median(areas) / np.pi))


def test_background_strokes_teach_background_far_from_cells(sparse_cells):
    image, _, painted = sparse_cells
    strokes = np.zeros(painted.shape, np.uint8)
    strokes[2:6, 2:40] = 1  # far from the painted cells (checked below)
    strokes[painted == 1] = 1  # over a painted cell: the cell wins
    assert _brute_distance(painted > 0)[2:6, 2:40].min() > band_px(painted)
    data = TrainingData.from_arrays(image, painted, background=strokes, validation_fraction=0)
    assert np.all(data.weights[0, 2:6, 2:40] > 0) and np.all(data.targets[0, 2:6, 2:40] == 0)
    # the stroke over cell 1 changes nothing there: still a cell, still trained on
    assert np.all(data.weights[0][painted == 1] > 0)
    assert (data.targets[0][painted == 1] == 1).mean() > 0.9
    assert data.use.n_background_strokes == 1
    assert "3 cells, 1 background stroke;" in data.use.describe()
    # strokes alone on another slice make it a background-only annotated slice
    stack = np.zeros((2, *painted.shape), np.uint16)
    stack[0] = painted
    stroke_stack = np.zeros_like(stack)
    stroke_stack[1, :10, :10] = 1
    data = TrainingData.from_arrays(np.stack([image, image]), stack, background=stroke_stack)
    assert data.slice_indices == (0, 1)
    assert np.count_nonzero(data.weights[1]) == 100


def test_unpainted_cells_that_look_like_the_painted_ones_are_not_background():
    image = np.zeros((64, 64), np.float32)
    painted = np.zeros((64, 64), np.uint16)
    painted[20:30, 20:30] = 1
    image[20:30, 20:30] = 1.0  # bright painted nucleus
    image[20:30, 30:40] = 1.0  # its unpainted bright neighbour, touching it
    for y, x in ((45, 5), (45, 45), (5, 50)):
        image[y : y + 10, x : x + 10] = 1.0  # more unpainted nuclei: the painting is sparse
    image += np.random.default_rng(0).normal(0, 0.05, image.shape).astype(np.float32)
    data = TrainingData.from_arrays(image, painted, validation_fraction=0)
    band = (data.weights[0] > 0) & (painted == 0)
    assert band.any() and not band[20:30, 31:40].any()  # the neighbour is ignored
    assert band[20:30, 20 - band_px(painted) : 20].all()  # dark background beside it: used
    assert data.use.sparse_slices == (0,)
    assert not (data.weights[0][45:55, 45:55] > 0).any()  # unpainted far nuclei: ignored


def test_where_intensity_cannot_tell_a_model_hint_keeps_neighbours_out_of_the_band():
    """Phase-contrast-like: cells and background have the same intensity, so without a
    hint the painted cell's band covers its touching unpainted neighbour (taught as
    background); a start model's hint of where cells are keeps it out, except the ring
    right outside the painted cell (its outline's gap)."""
    image = np.random.default_rng(0).normal(0, 0.05, (64, 64)).astype(np.float32)
    painted = np.zeros((64, 64), np.uint16)
    painted[20:30, 20:30] = 1
    painted[45:55, 5:15] = 2
    hint = np.zeros((64, 64), bool)
    hint[20:30, 20:40] = True  # the painted cell and its unpainted neighbour to the right
    hint[45:55, 5:15] = True
    plain = TrainingData.from_arrays(image, painted, validation_fraction=0, unpainted="ignore")
    hinted = TrainingData.from_arrays(
        image, painted, validation_fraction=0, unpainted="ignore", cell_hint=hint
    )
    # the neighbour's pixels inside the band (6 px here) but beyond the 1.5-px ring
    neighbour = (slice(20, 30), slice(32, 30 + band_px(painted)))
    assert (plain.weights[0][neighbour] > 0).all()  # without the hint: "background"
    assert not (hinted.weights[0][neighbour] > 0).any()  # with it: ignored
    assert (hinted.weights[0][20:30, 30] > 0).all()  # the gap right outside: still taught
    assert (hinted.weights[0][20:30, 20 - band_px(painted) : 20] > 0).all()  # plain background
    assert np.array_equal(hinted.targets, plain.targets)  # only what is used changes


def test_the_hint_is_where_the_start_model_sees_cells_and_only_if_it_sees_the_painted():
    import torch

    from _threshold_model import threshold_unet
    from napari_unet.core.train import start_view

    image = np.zeros((64, 64), np.float32)
    image[10:20, 10:20] = image[10:20, 40:50] = 1.0  # two bright cells, one painted
    image[30:40, 30:40] = 0.5  # a dim blob the model is unsure about (probability 0.5)
    painted = np.zeros((64, 64), np.uint16)
    painted[10:20, 10:20] = 1
    net = threshold_unet()  # foreground = normalised intensity > 0.5
    view = start_view(net, image, painted, 1, 1.0, torch.device("cpu"))
    assert np.array_equal(view.hint, image > 0.5)  # both cells, painted or not
    # its sure classes: 1 on the bright cells, 0 on the dark background, unsure on the blob
    expected = np.where(image > 0.5, 1, np.where(image < 0.5, 0, TEACHER_UNSURE))
    assert np.array_equal(view.teacher, expected)
    # a model that misses the painted cell gives no hint at all (it would mislead)
    assert start_view(net, 1.0 - image, painted, 1, 1.0, torch.device("cpu")) == (None, None)


def test_a_start_model_teaches_what_it_is_sure_of_where_nothing_is_painted():
    image, truth = touching_cells((256, 256), seed=6)
    ids = np.unique(truth)[1:]
    painted = _paint(truth, ids[::6][:10])
    teacher = np.where(truth > 0, 1, 0).astype(np.uint8)  # a model that knows every cell
    teacher[:, :40] = TEACHER_UNSURE  # ... except on a strip it is unsure about
    plain = TrainingData.from_arrays(image, painted)
    taught = TrainingData.from_arrays(image, painted, teacher=teacher)
    own = plain.weights[0] > 0
    # the painting's own pixels keep their targets and weights; the held-out cells too
    np.testing.assert_array_equal(taught.weights[0][own], plain.weights[0][own])
    np.testing.assert_array_equal(taught.targets[0][own], plain.targets[0][own])
    region = plain.validation
    assert taught.validation.slice_index == region.slice_index
    assert (taught.validation.y0, taught.validation.x1) == (region.y0, region.x1)
    np.testing.assert_array_equal(taught.validation.mask, region.mask)
    # elsewhere: the model's sure class, at TEACHER_WEIGHT; nothing where it is unsure
    box = np.zeros(painted.shape, bool)
    box[region.y0 : region.y1, region.x0 : region.x1] = True  # held out: nobody teaches
    expected = ~own & ~box & (teacher != TEACHER_UNSURE)
    np.testing.assert_array_equal(taught.taught[0], expected)
    assert np.all(taught.weights[0][expected] == TEACHER_WEIGHT)
    np.testing.assert_array_equal(taught.targets[0][expected], teacher[expected])
    assert not (taught.weights[0] > 0)[~own & ~expected].any()
    assert taught.use.teacher_fraction == pytest.approx(expected.mean())
    assert "the start model's sure pixels elsewhere: " in taught.use.describe()
    # a complete annotation teaches everything already: the model adds nothing
    whole = TrainingData.from_arrays(image, truth, teacher=teacher)
    assert whole.taught is None and whole.use.teacher_fraction == 0.0
    # resized training (large cells): the teacher is resized with the labels
    half = TrainingData.from_arrays(image, painted, teacher=teacher, scale=0.5)
    assert half.taught.shape == half.labels.shape == (1, 128, 128)
    assert set(np.unique(half.targets[half.taught])) == {0, 1}


def test_complete_annotation_boxes_and_the_toggle_keep_unpainted_as_background():
    image, truth = touching_cells((96, 96), seed=4)
    assert np.count_nonzero(truth) / truth.size > SPARSE_MAX_COVERAGE
    data = TrainingData.from_arrays(image, truth, validation_fraction=0)
    assert data.use.sparse_slices == () and np.all(data.weights[0] > 0)
    few = _paint(truth, np.unique(truth)[1:3])
    forced = TrainingData.from_arrays(image, few, unpainted="background", validation_fraction=0)
    assert np.all(forced.weights[0] > 0)
    boxed = TrainingData.from_arrays(
        image, few, regions=[(None, 0, 0, 48, 96)], validation_fraction=0
    )
    assert np.all(boxed.weights[0, :48] > 0) and np.all(boxed.weights[0, 48:] == 0)
    ignored = TrainingData.from_arrays(image, truth, unpainted="ignore", validation_fraction=0)
    assert ignored.use.sparse_slices == (0,)


def test_painted_cells_are_held_out_for_validation_when_there_are_enough():
    image, truth = touching_cells((256, 256), seed=6)
    ids = np.unique(truth)[1:]
    painted = _paint(truth, ids[::6][:10])
    data = TrainingData.from_arrays(image, painted)
    region = data.validation
    assert region is not None
    window = painted[region.y0 : region.y1, region.x0 : region.x1]
    held = np.unique(window[region.mask & (window > 0)])
    assert len(held) == 2  # 20 % of 10 cells
    for cell in held:  # never trained on
        assert np.all(data.weights[0][painted == cell] == 0)
    trained = np.unique(painted[(data.weights[0] > 0) & (painted > 0)])
    assert len(trained) == 8 and not set(trained) & set(held)
    few = TrainingData.from_arrays(image, _paint(truth, ids[:3]))
    assert few.validation is None
    assert any("only 3 painted" in w for w in few.use.warnings)


def test_describe_use_matches_training_and_warns(sparse_cells):
    image, truth, painted = sparse_cells
    use = describe_use(image, painted)
    data = TrainingData.from_arrays(image, painted, validation_fraction=0)
    assert use == data.use
    assert use.describe().startswith("3 cells, 0 background strokes; area used: ")
    full = np.ones_like(truth)
    assert any("no background" in w for w in describe_use(image, full).warnings)
    strokes_only = describe_use(image, np.zeros_like(truth), background=truth > 0)
    assert any("no cells painted" in w for w in strokes_only.warnings)
    assert describe_use(image, np.zeros_like(truth)).warnings == ("nothing is annotated yet",)


def _fine_tune(image, painted, unpainted: str, steps: int = 40):
    from napari_unet.core.train import Step, TrainConfig, TrainResult, training_job
    from napari_unet.models import starter_model_path

    result = TrainResult()
    config = TrainConfig(steps=steps, tile_size=92, device="cpu", seed=0, validate_every=1000)
    training = TrainingSettings(unpainted=unpainted)
    losses = []
    for event in training_job(
        image, painted, config, str(starter_model_path()), result=result, training=training
    ):
        if isinstance(event, Step):
            losses.append(event.loss)
    return result, losses


def test_a_few_painted_cells_fine_tune_without_collapse_or_spikes():
    from napari_unet.core import tiling
    from napari_unet.core.normalize import normalize

    image, truth = touching_cells((192, 192), seed=21)
    ids = np.unique(truth)[1:]
    painted = _paint(truth, ids[::5][:8])
    rest = (truth > 0) & (painted == 0)  # the cells nobody painted
    sparse, losses = _fine_tune(image, painted, "auto")
    assert sparse.metadata["training"]["annotation"].startswith("8 cells")
    # the starter finds the painted cells, so it teaches where it is sure
    assert "the start model's sure pixels elsewhere" in sparse.metadata["training"]["annotation"]
    # no spike: every loss under 10x the running mean of the 20 before it (the median is
    # ~0 here: the starter already gets most synthetic tiles right, so they cost nothing)
    for i in range(20, len(losses)):
        assert losses[i] < 10 * np.mean(losses[i - 20 : i])

    # the trained (last) weights still find the unpainted cells: nothing taught them as
    # background (with unpainted = background they would be, and the start model kept)
    net = sparse.net
    net.load_state_dict(sparse.resume.weights)
    probs = tiling.predict_tiled(net.eval(), normalize(image), device="cpu")
    found = probs[0] < 0.5  # cell interior or border: not background
    assert (found & rest).sum() / rest.sum() > 0.8


def test_cli_trains_with_background_strokes_and_the_unpainted_rule(tmp_path, sparse_cells):
    from napari_unet._cli import main
    from napari_unet.core import checkpoint, io

    image, _, painted = sparse_cells
    strokes = np.zeros(painted.shape, np.uint8)
    strokes[2:6, 2:40] = 1
    paths = {n: tmp_path / f"{n}.tif" for n in ("image", "labels", "strokes")}
    for name, data in zip(paths, (image, painted, strokes), strict=True):
        io.write(paths[name], data)
    model = tmp_path / "m.safetensors"
    args = ["train", str(paths["image"]), str(paths["labels"]), "-o", str(model)]
    args += ["--steps", "1", "--tile-size", "92", "--device", "cpu"]
    assert main([*args, "--background", str(paths["strokes"]), "--unpainted", "ignore"]) == 0
    training = checkpoint.read_metadata(model)["training"]
    assert training["annotation"].startswith("3 cells, 1 background stroke;")
    assert training["settings"]["unpainted"] == "ignore"


def test_describe_use_takes_colour_and_time_lapse_as_training_does():
    """The Train dock's line on an RGB layer, or a time-lapse of colour frames: what
    training will use, not a complaint that the image is not gray. Fixture: a crop of
    DSB2018 aa58ba4512955771 (CC0, tests/data/README.md)."""
    from pathlib import Path

    from napari_unet.core import io
    from napari_unet.core.train import _training_data

    data = Path(__file__).with_name("data")
    image = io.read(data / "dsb2018_aa58ba45_crop.tif")  # (128, 128, 3)
    truth = io.read(data / "dsb2018_aa58ba45_crop_labels.tif")
    painted = _paint(truth, np.unique(truth)[1:6])
    use = describe_use(image, painted)
    trained = _training_data(image, painted, None, None, None, None, validation_fraction=0)
    assert trained.images.shape[1] == 3 and use == trained.use
    assert use.describe().startswith("5 cells, 0 background strokes")
    frames = np.stack([image, image // 4])  # the second time point bleached
    both = np.stack([painted, painted])
    use = describe_use(frames, both, axes="TYXC")
    trained = _training_data(frames, both, None, "TYXC", None, None, validation_fraction=0)
    assert use == trained.use and "of 2 slices" in use.describe()


def test_several_sparse_pairs_are_sparse_together_held_out_by_cells_and_taught():
    """A few cells painted on each of two images of different sizes: each keeps its own
    informative region, the summary counts both, cells are held out (not a band), tiles
    are centred near the painting, the loss settings and each pair's teacher apply."""
    from napari_unet.core.settings import WeightSettings

    a, truth_a = touching_cells((256, 256), seed=6)
    b, truth_b = touching_cells((160, 200), seed=8)
    painted_a = _paint(truth_a, np.unique(truth_a)[1::6][:6])
    painted_b = _paint(truth_b, np.unique(truth_b)[1::5][:4])
    teacher_b = np.where(truth_b > 0, 1, 0).astype(np.uint8)  # a model sure everywhere
    settings = WeightSettings(w0=4.0, sigma_px=3.0)
    alone = [
        TrainingData.from_arrays(i, p, validation_fraction=0, weight_settings=settings)
        for i, p in ((a, painted_a), (b, painted_b))
    ]
    both = TrainingData.from_pairs(
        [(a, painted_a), (b, painted_b)],
        scale=1.0,
        weight_settings=settings,
        teachers=[None, teacher_b],
    )
    use = both.use
    assert (use.n_cells, use.sparse_slices, use.n_slices) == (10, (0, 1), 2)
    real = [(alone[0].weights[0] > 0).sum(), (alone[1].weights[0] > 0).sum()]
    assert use.used_fraction == pytest.approx(sum(real) / (256 * 256 + 160 * 200))
    assert use.describe().startswith("10 cells, 0 background strokes; area used: ")
    assert "of 2 images (sparse: unpainted cells ignored)" in use.describe()
    assert both.weight_settings == settings  # recorded in the model as trained
    # held out: painted cells of one image with their band, never trained on
    region = both.validation
    window = both.labels[region.index, region.y0 : region.y1, region.x0 : region.x1]
    held = np.unique(window[region.mask & (window > 0)])
    assert len(held) >= 1
    for cell in held:
        assert np.all(both.weights[region.index][both.labels[region.index] == cell] == 0)
    # tiles are centred where each pair alone would centre them; never in the padding
    assert both.centres.shape == both.labels.shape == (2, 256, 256)
    np.testing.assert_array_equal(both.centres[0], alone[0].centres[0])
    np.testing.assert_array_equal(both.centres[1, :160, :200], alone[1].centres[0])
    assert not both.centres[1, 160:].any() and not both.centres[1, :, 200:].any()
    # image b is taught where nothing is painted; a is not (no teacher); padding is not
    own_b = alone[1].weights[0] > 0
    expected_b = ~own_b
    if region.index == 1:
        expected_b[region.y0 : region.y1, region.x0 : region.x1] = False
    np.testing.assert_array_equal(both.taught[1, :160, :200], expected_b)
    assert not both.taught[0].any() and not both.taught[1, 160:].any()
    assert np.all(both.weights[1, :160, :200][expected_b] == TEACHER_WEIGHT)
    np.testing.assert_array_equal(both.targets[1, :160, :200][expected_b], teacher_b[expected_b])
    assert use.teacher_fraction == pytest.approx(expected_b.sum() / (256 * 256 + 160 * 200))


def test_fine_tuning_on_several_sparsely_painted_images_uses_and_records_them_all():
    """The Train dock's "more pairs" with a few cells painted on each: the start model
    teaches on every image, and the saved model says what trained and with which loss."""
    from napari_unet.core.settings import WeightSettings
    from napari_unet.core.train import TrainConfig, TrainResult, training_job
    from napari_unet.models import starter_model_path

    a, truth_a = touching_cells((192, 192), seed=21)
    b, truth_b = touching_cells((160, 176), seed=22)
    painted_a = _paint(truth_a, np.unique(truth_a)[1::5][:6])
    painted_b = _paint(truth_b, np.unique(truth_b)[1::5][:5])
    weights = WeightSettings(w0=6.0, sigma_px=4.0)
    result = TrainResult()
    config = TrainConfig(steps=3, tile_size=92, device="cpu", seed=0, validate_every=1000)
    job = training_job(
        a,
        painted_a,
        config,
        str(starter_model_path()),
        result=result,
        training=TrainingSettings(weights=weights),
        extra_pairs=[(b, painted_b)],
    )
    for _ in job:
        pass
    training = result.metadata["training"]
    assert training["annotation"].startswith("11 cells, 0 background strokes; area used: ")
    assert "of 2 images (sparse: unpainted cells ignored)" in training["annotation"]
    assert "the start model's sure pixels elsewhere" in training["annotation"]
    assert training["settings"]["weights"]["w0"] == 6.0
    assert training["settings"]["weights"]["sigma_px"] == 4.0
