"""Uncertainty map, per-object confidence and annotate-next proposals (`core.confidence`),
the review actions on the annotations (`core.review`) and `predict --confidence`."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from _threshold_model import threshold_unet
from napari_unet.core import checkpoint, confidence, review
from napari_unet.core.annotations import Box
from napari_unet.core.events import run_to_end as run
from napari_unet.core.io import InputError
from napari_unet.core.predict import PredictConfig, predict_stack
from test_predict import METADATA, _squares

CONFIG = PredictConfig(tile_size=60, batch_size=2, device="cpu", min_size_px=4, confidence="tta")


def _disks(shape=(96, 96), centres=((24, 24), (24, 70), (70, 24), (70, 70), (48, 48)), r=8):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    for i, (cy, cx) in enumerate(centres, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return labels


def test_uncertainty_is_one_minus_the_margin():
    p = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 0.9]], np.float32)
    expected = 1 - np.abs(2 * p - 1)
    np.testing.assert_allclose(confidence.uncertainty_map(p), expected, atol=1e-6)


def test_tta_samples_of_an_equivariant_model_equal_one_prediction():
    """The threshold model is pixel-wise, so every flip/rotation predicts the same: the
    mean is the plain prediction and the uncertainty follows it exactly."""
    from napari_unet.core import tiling
    from napari_unet.core.events import run_to_end

    net = threshold_unet()
    image = np.random.default_rng(0).random((40, 52)).astype(np.float32)
    samples = run_to_end(confidence.sample_iter(net, image[None], "tta", tile_size=60))
    plain = tiling.predict_tiled(net, image, tile_size=60)
    np.testing.assert_allclose(samples.probabilities, plain, atol=1e-5)
    np.testing.assert_allclose(samples.uncertainty, 1 - np.abs(2 * plain[1] - 1), atol=1e-5)


def test_dropout_sampling_needs_a_model_with_dropout():
    with pytest.raises(InputError, match="no dropout"):
        list(
            confidence.sample_iter(threshold_unet(), np.zeros((1, 20, 20), np.float32), "dropout")
        )


def test_dropout_samples_differ_and_are_seeded():
    from napari_unet.core.events import run_to_end
    from napari_unet.core.model import UNet

    net = UNet(base_channels=4, depth=2, dropout=0.5).eval()
    image = np.random.default_rng(1).random((1, 36, 36)).astype(np.float32)
    a = run_to_end(confidence.sample_iter(net, image, "dropout", 4, tile_size=60, seed=3))
    b = run_to_end(confidence.sample_iter(net, image, "dropout", 4, tile_size=60, seed=3))
    c = run_to_end(confidence.sample_iter(net, image, "dropout", 4, tile_size=60, seed=4))
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert not np.allclose(a.probabilities, c.probabilities)


def test_certainty_is_the_mean_margin_inside_each_object():
    labels = _disks()
    p = np.where(labels > 0, 0.95, 0.02).astype(np.float32)
    p[labels == 3] = 0.7
    scores = confidence.score_objects(labels, confidence.uncertainty_map(p))
    assert [s.id for s in scores] == [1, 2, 3, 4, 5]
    by_id = {s.id: s for s in scores}
    assert by_id[3].certainty == pytest.approx(abs(2 * 0.7 - 1), abs=1e-5)
    assert by_id[1].certainty == pytest.approx(0.9, abs=1e-5)
    assert by_id[3].area == int((labels == 3).sum())
    assert by_id[3].confidence < by_id[1].confidence
    assert "unsure" in by_id[3].reason
    assert confidence.worst_first(scores)[0].id == 3


def test_stability_is_the_mean_best_iou_over_the_samples():
    """Two samples: one finds the cells alike, the other merges cells 3 and 4 and shifts
    cell 5 by 4 px. Stability = mean best IoU, against IoUs counted here by hand."""
    labels = _disks(centres=((24, 24), (24, 70), (70, 24), (70, 40), (48, 70)))
    merged = labels.copy()
    merged[labels == 4] = 3
    merged[labels == 5] = 0
    merged[np.roll(labels == 5, 4, axis=1)] = 5
    scores = confidence.score_objects(
        labels, np.zeros(labels.shape, np.float32), sample_labels=[labels, merged]
    )
    by_id = {s.id: s for s in scores}

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    for cell in (1, 2):
        assert by_id[cell].stability == pytest.approx(1.0)
    for cell in (3, 4):
        expected = (1 + iou(labels == cell, merged == 3)) / 2
        assert by_id[cell].stability == pytest.approx(expected)
        assert by_id[cell].stability < 0.8
    assert by_id[5].stability == pytest.approx((1 + iou(labels == 5, merged == 5)) / 2)
    assert by_id[3].confidence < by_id[1].confidence
    assert "merged" in by_id[3].reason
    # without samples every object counts as stable
    alone = confidence.score_objects(labels, np.zeros(labels.shape, np.float32))
    assert {s.stability for s in alone} == {1.0}
    with pytest.raises(InputError, match="shape"):
        confidence.score_objects(labels, np.zeros(labels.shape), sample_labels=[labels[1:]])


def test_confidence_is_lower_on_a_damaged_prediction():
    """Clean: sharp probabilities and round cells. Damaged: the same cells blurred toward
    0.5, one cell cut into fragments and two merged; every damage lowers the confidence."""
    from scipy import ndimage as ndi

    labels = _disks(centres=((24, 24), (24, 70), (70, 24), (70, 42), (48, 70), (75, 75)))
    clean_p = np.where(labels > 0, 0.98, 0.02).astype(np.float32)
    clean = confidence.score_objects(labels, confidence.uncertainty_map(clean_p))

    damaged_p = 0.5 + 0.5 * (ndi.gaussian_filter(clean_p, 3) - 0.5)
    damaged_labels = labels.copy()
    damaged_labels[(labels == 3) | (labels == 4)] = 3  # merged pair (touching disks)
    damaged_labels[(labels == 1) & (np.arange(96)[None, :] > 24)] = 7  # fragment
    damaged = confidence.score_objects(
        damaged_labels,
        confidence.uncertainty_map(damaged_p),
        reference=confidence.reference_from(labels),
    )
    assert np.mean([s.confidence for s in damaged]) < np.mean([s.confidence for s in clean]) - 0.2
    assert max(s.confidence for s in damaged) < min(s.confidence for s in clean)
    by_id = {s.id: s for s in damaged}
    assert by_id[3].size < 1 or by_id[3].shape < 1  # the merge looks implausible
    assert by_id[7].size < 1


def test_end_to_end_dim_cells_are_less_confident():
    """Squares at 56 % of the bright intensity sit near the threshold model's cut-off."""
    image, truth = _squares(3, shape=(80, 100), n=6)
    dim = np.isin(truth, [2, 5])
    image[dim] = 100 + int(0.56 * 800)
    prediction = run(predict_stack(threshold_unet(), METADATA, image, CONFIG))
    assert prediction.uncertainty.shape == image.shape
    scores = {s.id: s.confidence for s in prediction.objects}
    assert sorted(scores) == sorted(np.unique(prediction.labels[prediction.labels > 0]).tolist())
    dim_ids = set(np.unique(prediction.labels[dim]).tolist()) - {0}
    assert len(dim_ids) == 2
    assert max(scores[i] for i in dim_ids) < min(v for i, v in scores.items() if i not in dim_ids)


def test_stack_objects_carry_their_slice_and_the_output_ids():
    image, _ = _squares(4, shape=(60, 70), n=3)
    stack = np.stack([image, image[::-1]])
    prediction = run(predict_stack(threshold_unet(), METADATA, stack, CONFIG))
    for obj in prediction.objects:
        assert np.count_nonzero(prediction.labels[obj.slice] == obj.id) == obj.area
    assert {o.slice for o in prediction.objects} == {0, 1}
    assert len({o.id for o in prediction.objects}) == len(prediction.objects)
    # a pixel-wise model finds the same objects in every flip/rotation
    assert [o.stability for o in prediction.objects] == pytest.approx(
        [1.0] * len(prediction.objects)
    )


# --- proposals -------------------------------------------------------------------------


def test_proposals_follow_uncertainty_inside_the_image_and_off_annotations():
    rng = np.random.default_rng(0)
    uncertainty = rng.random((120, 150)).astype(np.float32) * 0.1
    uncertainty[10:40, 100:140] = 0.9  # the place to annotate
    uncertainty[80:110, 10:40] = 0.95  # even more uncertain, but annotated already
    annotated = np.zeros((120, 150), np.uint16)
    annotated[90:100, 20:30] = 4
    existing = [Box(None, 0, 0, 30, 30)]
    boxes = confidence.propose_regions(
        uncertainty, annotated, n_boxes=4, box_px=32, existing=existing
    )
    assert len(boxes) == 4
    first = boxes[0]
    assert (first.y0, first.x0) == pytest.approx((9, 104), abs=4)
    taken = np.zeros(annotated.shape, bool)
    for b in boxes:
        assert 0 <= b.y0 < b.y1 <= 120 and 0 <= b.x0 < b.x1 <= 150
        assert (b.y1 - b.y0, b.x1 - b.x0) == (32, 32)
        assert not annotated[b.y0 : b.y1, b.x0 : b.x1].any()
        assert not (b.y0 < 30 and b.x0 < 30)  # off the existing box
        assert not taken[b.y0 : b.y1, b.x0 : b.x1].any()  # no overlap among proposals
        taken[b.y0 : b.y1, b.x0 : b.x1] = True


def test_proposals_stop_when_no_free_place_is_left():
    annotated = np.zeros((40, 40), np.uint8)
    annotated[20, 20] = 1
    boxes = confidence.propose_regions(np.ones((40, 40)), annotated, 5, box_px=20)
    assert len(boxes) <= 4
    for b in boxes:
        assert not annotated[b.y0 : b.y1, b.x0 : b.x1].any()


def test_novelty_prefers_regions_unlike_the_annotated_ones():
    image = np.zeros((64, 128), np.float32)
    image[:, 64:] = 5.0  # the right half looks different from the annotated left part
    annotated = np.zeros((64, 128), np.uint8)
    annotated[5:10, 5:10] = 1
    flat = np.full((64, 128), 0.5, np.float32)
    (box,) = confidence.propose_regions(flat, annotated, 1, box_px=24, image=image)
    assert box.x1 > 64  # reaches into the unlike half (an all-alike box scores lower)


# --- review actions ----------------------------------------------------------------------


def test_review_actions_write_the_expected_annotations():
    prediction = np.zeros((30, 40), np.uint16)
    prediction[5:15, 5:12] = 1
    prediction[5:15, 14:20] = 2  # 2 px gap to object 1
    prediction[20:26, 30:36] = 3
    annotations = np.zeros_like(prediction)
    annotations[0:2, 0:2] = 9  # the user's own cell elsewhere

    def apply(edit):
        out = annotations.copy()
        out[edit.indices] = edit.values
        return out

    accepted = apply(review.accept(prediction, annotations, 3, next_id=10))
    assert np.array_equal(accepted == 10, prediction == 3)
    assert accepted[0, 0] == 9
    edit = review.accept(prediction, annotations, 3, 10)
    assert edit.box == Box(None, 18, 28, 28, 38)

    assert review.neighbour(prediction, 1) == 2
    merged = apply(review.merge(prediction, annotations, 1, next_id=10))
    assert set(np.unique(merged)) == {0, 9, 10}
    assert (merged[5:15, 5:20] == 10).all()  # the gap between them is filled

    deleted = review.delete(prediction, accepted, 3)
    out = accepted.copy()
    out[deleted.indices] = deleted.values
    assert not (out == 10).any() and out[0, 0] == 9

    cut = review.split(prediction, annotations, 1, np.array([[10, 0], [10, 30]]), next_id=10)
    parts = apply(cut)
    assert set(np.unique(parts[prediction == 1])) == {10, 11}
    assert (parts[prediction == 1] > 0).all()
    with pytest.raises(InputError, match="does not cut"):
        review.split(prediction, annotations, 1, np.array([[0, 0], [1, 1]]), 10)
    with pytest.raises(InputError, match="no neighbour"):
        review.merge(prediction, annotations, 3, 10)


# --- CLI ---------------------------------------------------------------------------------


def test_cli_confidence_writes_one_row_per_output_object(tmp_path):
    import tifffile

    from napari_unet._cli import main

    image, _ = _squares(5, shape=(70, 90), n=5)
    np.save(tmp_path / "image.npy", image)
    model = checkpoint.save(tmp_path / "m.safetensors", threshold_unet(), METADATA)
    code = main(
        [
            "predict",
            str(model),
            str(tmp_path / "image.npy"),
            "-o",
            str(tmp_path / "labels.tif"),
            "--tile-size",
            "60",
            "--min-size",
            "4",
            "--confidence",
            str(tmp_path / "objects.csv"),
            "--uncertainty",
            str(tmp_path / "u.tif"),
        ]
    )
    assert code == 0
    labels = tifffile.imread(tmp_path / "labels.tif")
    with (tmp_path / "objects.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:3] == ["id", "confidence", "area"]
    ids = [int(r["id"]) for r in rows]
    assert ids == sorted(np.unique(labels[labels > 0]).tolist())
    for r in rows:
        assert int(r["area"]) == np.count_nonzero(labels == int(r["id"]))
        assert 0.0 <= float(r["confidence"]) <= 1.0
    assert tifffile.imread(tmp_path / "u.tif").shape == image.shape


def test_cli_uncertainty_without_confidence_is_refused(tmp_path, capsys):
    from napari_unet._cli import main

    code = main(["predict", "m.safetensors", "i.npy", "-o", "l.tif", "--uncertainty", "u.tif"])
    assert code == 2
    assert "--confidence" in capsys.readouterr().err
