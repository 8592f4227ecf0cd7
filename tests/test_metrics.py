"""Metrics against hand-worked cases and brute-force computations on random label images."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core import metrics
from napari_unet.core.io import InputError


def squares(shape, boxes) -> np.ndarray:
    """Label image with label k+1 in boxes[k] = (y0, y1, x0, x1)."""
    labels = np.zeros(shape, dtype=np.uint16)
    for k, (y0, y1, x0, x1) in enumerate(boxes):
        labels[y0:y1, x0:x1] = k + 1
    return labels


def disk(shape, centre, radius) -> np.ndarray:
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def random_labels(shape, seed, sigma=3.5, level=0.0) -> np.ndarray:
    """Blobs of smoothed noise, cut into pieces: irregular objects, some touching."""
    rng = np.random.default_rng(seed)
    blobs = ndi.gaussian_filter(rng.normal(size=shape), sigma) > level
    labels, _ = ndi.label(blobs)
    # Cut some blobs in two along a random line so that objects touch.
    cut = ndi.gaussian_filter(rng.normal(size=shape), 6) > 0
    labels = np.where(cut & (labels > 0), labels + labels.max(), labels)
    return np.unique(labels, return_inverse=True)[1].reshape(shape).astype(np.int32)


def perturbed(labels, seed) -> np.ndarray:
    """A plausible 'prediction': shifted, ids permuted, one object dropped, one blob added."""
    rng = np.random.default_rng(seed)
    pred = np.roll(labels, tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
    ids = np.unique(pred[pred > 0])
    pred[pred == rng.choice(ids)] = 0
    permutation = np.concatenate([[0], rng.permutation(np.arange(1, pred.max() + 1)) + 5])
    pred = permutation[pred]
    pred[disk(pred.shape, rng.integers(5, 40, size=2), 4)] = 999
    return pred


def brute_iou(gt, pred) -> dict[tuple[int, int], float]:
    table = {}
    for g in np.unique(gt[gt > 0]):
        for p in np.unique(pred[pred > 0]):
            a, b = gt == g, pred == p
            if (a & b).any():
                table[int(g), int(p)] = (a & b).sum() / (a | b).sum()
    return table


def brute_rand_error(gt, pred) -> float:
    """1 - Rand F-score by comparing every pair of ground-truth-foreground pixels."""
    g, p = gt[gt > 0].astype(np.int64), pred[gt > 0].astype(np.int64)
    upper = np.triu(np.ones((len(g), len(g)), dtype=bool), k=1)
    same_g = (g[:, None] == g[None, :]) & upper
    same_p = (p[:, None] == p[None, :]) & (p[:, None] > 0) & upper
    both = (same_g & same_p).sum()
    precision, recall = both / same_p.sum(), both / same_g.sum()
    return 1 - 2 * precision * recall / (precision + recall)


# --- hand-worked cases ----------------------------------------------------------------------


def test_shifted_square_iou_and_ap_by_hand():
    gt = squares((20, 20), [(0, 10, 0, 10)])
    pred = squares((20, 20), [(0, 10, 2, 12)])  # overlap 10 x 8 = 80, union 120
    m = metrics.match(gt, pred)
    assert m.iou == pytest.approx([80 / 120])
    ap = metrics.average_precision(gt, pred, thresholds=(0.5, 0.65, 0.7))
    # IoU 2/3 passes 0.5 and 0.65 (one TP), fails 0.7 (one FP + one FN: 0 / 2).
    np.testing.assert_allclose(ap, [1.0, 1.0, 0.0])
    # Pixel error: 20 pixels of the gt and 20 of the prediction are alone, of 400.
    assert metrics.pixel_error(gt, pred) == pytest.approx(40 / 400)
    assert metrics.iou_score(gt, pred) == pytest.approx(80 / 120)


def test_ap_counts_missed_and_extra_objects():
    gt = squares((30, 30), [(0, 5, 0, 5), (10, 15, 10, 15), (20, 25, 20, 25)])
    pred = squares((30, 30), [(0, 5, 0, 5), (10, 15, 10, 15), (0, 5, 20, 25)])
    # 2 TP, 1 FP, 1 FN -> 2 / 4.
    assert metrics.average_precision(gt, pred, (0.5,))[0] == pytest.approx(0.5)
    result = metrics.evaluate(gt, pred, thresholds=(0.5,))
    assert (result["tp"], result["fp"], result["fn"]) == (2, 1, 1)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)


def test_empty_images_score_perfectly_and_missing_prediction_scores_zero():
    empty = np.zeros((8, 8), dtype=np.uint8)
    assert metrics.average_precision(empty, empty, (0.5,))[0] == 1.0
    assert metrics.iou_score(empty, empty) == 1.0
    gt = squares((8, 8), [(1, 4, 1, 4)])
    assert metrics.average_precision(gt, empty, (0.5,))[0] == 0.0
    assert metrics.rand_error(gt, empty) == pytest.approx(1.0)


def test_optimal_matching_beats_greedy_below_half_iou():
    # gt A, B; predictions P, Q. IoU(A,P)=0.6, IoU(B,P)=0.35, IoU(A,Q)=0.35. Greedy
    # best-first pairs A-P and stops at one match; the optimum is A-Q and B-P.
    m = metrics.Matching(
        gt_ids=np.array([1, 2]),
        pred_ids=np.array([1, 2]),
        gt_areas=np.array([10, 10]),
        pred_areas=np.array([10, 10]),
        pair_gt=np.array([0, 1, 0]),
        pair_pred=np.array([0, 0, 1]),
        intersection=np.array([6, 4, 4]),
        iou=np.array([0.6, 0.35, 0.35]),
        n_pixels=100,
    )
    chosen = m.matched(0.3)
    assert sorted(zip(m.pair_gt[chosen], m.pair_pred[chosen], strict=True)) == [(0, 1), (1, 0)]
    assert list(m.matched(0.5)) == [0]


def test_perfect_prediction_with_other_ids(cells_2d):
    _, gt = cells_2d
    ids = np.unique(gt)
    relabel = np.zeros(ids.max() + 1, dtype=np.int32)
    relabel[ids[1:]] = np.random.default_rng(0).permutation(len(ids) - 1) + 100
    result = metrics.evaluate(gt, relabel[gt])
    for key in ("precision", "recall", "f1", "mean_matched_iou", "foreground_iou", "mean_ap"):
        assert result[key] == 1.0, key
    assert all(result[f"ap@{t:.2f}"] == 1.0 for t in metrics.IOU_THRESHOLDS)
    for key in ("pixel_error", "rand_error", "warping_error", "fp", "fn", "splits", "merges"):
        assert result[key] == 0, key


def test_one_merge_and_one_split_are_counted():
    gt = squares((40, 60), [(5, 15, 5, 15), (5, 15, 15, 25), (25, 35, 30, 50), (25, 35, 5, 15)])
    pred = np.zeros_like(gt)
    pred[5:15, 5:25] = 1  # cells 1 and 2 (touching) merged
    pred[25:35, 30:40] = 2  # cell 3 split in two halves
    pred[25:35, 40:50] = 3
    pred[25:35, 5:15] = 4  # cell 4 exact
    result = metrics.evaluate(gt, pred, thresholds=(0.5,))
    assert (result["splits"], result["merges"]) == (1, 1)
    assert result["tp"] == 3  # cell 4, and each merged cell has IoU exactly 0.5 with 1
    assert result["warping_error"] > 0
    assert result["pixel_error"] == 0  # same foreground: only instance measures see it
    assert result["rand_error"] > 0


def test_small_fragment_inside_a_cell_counts_as_split():
    gt = squares((20, 20), [(2, 18, 2, 18)])
    pred = gt.copy()
    pred[8:10, 8:10] = 2
    assert metrics.split_merge(metrics.match(gt, pred))[0].tolist() == [0]


# --- brute force on random label images ----------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_and_ap_match_brute_force(seed):
    gt = random_labels((48, 48), seed)
    pred = perturbed(gt, seed + 10)
    table = brute_iou(gt, pred)
    m = metrics.match(gt, pred)
    ours = {
        (int(m.gt_ids[g]), int(m.pred_ids[p])): iou
        for g, p, iou in zip(m.pair_gt, m.pair_pred, m.iou, strict=True)
    }
    assert ours.keys() == table.keys()
    for pair, iou in table.items():
        assert ours[pair] == pytest.approx(iou)

    n_gt, n_pred = len(np.unique(gt)) - 1, len(np.unique(pred)) - 1
    thresholds = (0.5, 0.6, 0.7, 0.8, 0.9)
    expected = []
    for t in thresholds:
        hits = [pair for pair, iou in table.items() if iou >= t]
        # At IoU >= 0.5 an object can have only one partner: hits are the matching.
        assert len({g for g, _ in hits}) == len(hits) == len({p for _, p in hits})
        expected.append(len(hits) / (n_gt + n_pred - len(hits)))
    np.testing.assert_allclose(metrics.average_precision(gt, pred, thresholds), expected)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rand_error_matches_pair_counting(seed):
    gt = random_labels((32, 32), seed, sigma=2.0)
    pred = perturbed(gt, seed + 20)
    assert metrics.rand_error(gt, pred) == pytest.approx(brute_rand_error(gt, pred))


def test_rand_error_ignores_ground_truth_background():
    gt = squares((10, 10), [(0, 5, 0, 5)])
    pred = gt.copy()
    pred[6:, 6:] = 7  # an extra object on gt background: not part of the Rand score
    assert metrics.rand_error(gt, pred) == 0.0
    assert metrics.pixel_error(gt, pred) == pytest.approx(16 / 100)


# --- warping error ------------------------------------------------------------------------


def test_simple_point_table_by_hand():
    def code(patch):
        patch = np.asarray(patch, dtype=bool)
        return metrics._neighbour_codes(np.pad(patch, 1), 2, 3, 2, 3)[0, 0]

    assert not metrics._SIMPLE[code([[0, 0, 0], [0, 1, 0], [0, 0, 0]])]  # isolated pixel
    assert not metrics._SIMPLE[code(np.ones((3, 3)))]  # interior pixel
    assert metrics._SIMPLE[code([[0, 0, 0], [1, 1, 0], [0, 0, 0]])]  # end of a line
    assert not metrics._SIMPLE[code([[0, 0, 0], [1, 1, 1], [0, 0, 0]])]  # middle of a line
    assert metrics._SIMPLE[code([[1, 1, 1], [1, 1, 1], [0, 0, 0]])]  # flat border
    assert not metrics._SIMPLE[code([[1, 0, 1], [0, 0, 0], [0, 0, 0]])]  # would join two


def test_warping_error_zero_for_deformations_and_positive_for_topology_changes():
    shape = (60, 60)
    gt = np.zeros(shape, dtype=np.uint16)
    gt[disk(shape, (15, 15), 8)] = 1
    gt[disk(shape, (15, 42), 9)] = 2
    gt[disk(shape, (42, 28), 10)] = 3
    grown = ndi.grey_dilation(gt, size=(3, 3))  # every cell 1 px larger
    shifted = np.roll(gt, (1, 2), axis=(0, 1))
    shrunk = np.where(ndi.binary_erosion(gt > 0, iterations=2), gt, 0)
    for pred in (grown, shifted, shrunk):
        assert metrics.pixel_error(gt, pred) > 0
        assert metrics.warping_error(gt, pred) == 0

    split = gt.copy()
    split[(split == 3) & (np.indices(shape)[1] >= 28)] = 4  # cell 3 cut in two
    merged = gt.copy()
    merged[13:18, 15:43] = 1  # a bridge joins cells 1 and 2
    merged[merged == 2] = 1
    for pred in (split, merged):
        assert metrics.warping_error(gt, pred) > 0


def test_warping_error_of_a_moved_contact_line_is_zero():
    gt = squares((20, 30), [(2, 18, 2, 14), (2, 18, 14, 28)])
    pred = squares((20, 30), [(2, 18, 2, 16), (2, 18, 16, 28)])  # contact 2 px to the right
    assert metrics.warping_error(gt, pred) == 0
    assert metrics.warping_error(gt, np.where(pred > 0, 1, 0)) > 0  # the two cells merged


def test_a_shift_is_no_topological_error_on_512():
    """A whole image with hundreds of cells (the size the docks evaluate): a 3-px shift
    keeps every cell and gap, so the warping error stays far below the pixel error."""
    from napari_unet.core.synthetic import touching_cells

    _, gt = touching_cells((512, 512), seed=3)
    pred = np.zeros_like(gt)
    pred[:, 3:] = gt[:, :-3]
    warping = metrics.warping_error(gt, pred)
    assert 0.0 <= warping < 0.1 * metrics.pixel_error(gt, pred)


# --- stacks and bad input -------------------------------------------------------------------


def test_stack_pools_annotated_slices_only(cells_3d):
    _, labels = cells_3d
    gt = labels.copy()
    gt[[0, 2, 3, 5]] = 0  # annotated: slices 1 and 4
    pred = labels.copy()
    pred[4] = np.roll(pred[4], 4, axis=1)
    events = metrics.evaluate_iter(gt, pred)
    progress = []
    with pytest.raises(StopIteration) as stop:
        while True:
            progress.append(next(events))
    result = stop.value.value.metrics
    assert [(e.done, e.total) for e in progress] == [(1, 2), (2, 2)]
    # Objects on the unannotated slices are not false positives.
    per_slice = [metrics.evaluate(gt[z], pred[z]) for z in (1, 4)]
    assert result["slices"] == 2
    for key in ("n_gt", "n_pred", "tp", "fp", "fn"):
        assert result[key] == sum(r[key] for r in per_slice), key
    assert result["n_pred"] == sum(len(np.unique(pred[z])) - 1 for z in (1, 4))
    assert result["ap@0.50"] == pytest.approx(
        result["tp"] / (result["n_gt"] + result["n_pred"] - result["tp"])
    )
    assert metrics.evaluate(gt, pred, slices=[1])["ap@0.95"] == 1.0


def test_error_labels_hold_only_the_offending_objects():
    gt = squares((30, 30), [(0, 5, 0, 5), (10, 15, 10, 15), (20, 25, 20, 25)])
    pred = squares((30, 30), [(0, 5, 0, 5), (10, 15, 10, 15), (0, 5, 20, 25)])
    events = metrics.evaluate_iter(gt, pred)
    with pytest.raises(StopIteration) as stop:
        while True:
            next(events)
    evaluation = stop.value.value
    fn, fp = evaluation.error_labels["false negatives"], evaluation.error_labels["false positives"]
    assert np.array_equal(fn, np.where(gt == 3, 3, 0))
    assert np.array_equal(fp, np.where(pred == 3, 3, 0))
    assert not evaluation.error_labels["splits"].any()
    kinds = {(e.kind, e.label): e.centroid for e in evaluation.errors}
    assert kinds == {("false negatives", 3): (22.0, 22.0), ("false positives", 3): (2.0, 22.0)}


def test_bad_input_gives_clear_errors():
    with pytest.raises(InputError, match=r"shape \(4, 4\).*\(5, 5\)"):
        metrics.evaluate(np.zeros((5, 5), np.uint8), np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="integers"):
        metrics.match(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match="no annotated slice"):
        metrics.evaluate(np.zeros((3, 4, 4), np.uint8), np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(InputError, match="outside the stack"):
        metrics.evaluate(np.ones((3, 4, 4), np.uint8), np.ones((3, 4, 4), np.uint8), slices=[3])


# --- command line ---------------------------------------------------------------------------


def test_cli_prints_a_table_and_writes_the_same_numbers_as_json(tmp_path, capsys):
    import json

    from napari_unet._cli import main

    gt = squares((30, 30), [(0, 5, 0, 5), (10, 15, 10, 15), (20, 25, 20, 25)])
    pred = squares((30, 30), [(0, 5, 0, 5), (10, 15, 11, 16), (0, 5, 20, 25)])
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "pred.npy", pred)
    out = tmp_path / "scores.json"
    assert (
        main(
            ["evaluate", str(tmp_path / "pred.npy"), str(tmp_path / "gt.npy"), "--json", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "ap@0.50" in printed and "warping_error" in printed
    written = json.loads(out.read_text())
    assert written == pytest.approx(metrics.evaluate(gt, pred))
    # By hand: square 2 shifted by 1 px has IoU 20/30; 2 TP, 1 FP, 1 FN at 0.5.
    assert (written["tp"], written["fp"], written["fn"]) == (2, 1, 1)
    assert written["ap@0.65"] == pytest.approx(0.5) and written["ap@0.70"] == pytest.approx(1 / 5)


def test_cli_shape_mismatch_exits_2_with_one_line(tmp_path, capsys):
    from napari_unet._cli import main

    np.save(tmp_path / "gt.npy", np.zeros((8, 8), np.uint8))
    np.save(tmp_path / "pred.npy", np.zeros((8, 9), np.uint8))
    assert main(["evaluate", str(tmp_path / "pred.npy"), str(tmp_path / "gt.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("napari-unet evaluate: error:") and "(8, 9)" in err[-1]


def test_touching_pairs_separated_counts_merges_and_misses():
    from napari_unet.core.metrics import touching_pairs_separated

    gt = np.zeros((10, 20), np.uint8)
    gt[1:5, 1:5], gt[1:5, 5:9] = 1, 2  # touching pair A
    gt[6:9, 1:5], gt[6:9, 5:9] = 3, 4  # touching pair B
    gt[1:5, 12:16], gt[1:5, 16:19] = 5, 6  # touching pair C
    pred = gt.copy()
    pred[pred == 4] = 3  # pair B merged
    pred[pred == 6] = 0  # cell 6 missed: pair C not separated
    assert touching_pairs_separated(gt, pred) == (1, 3)
    assert touching_pairs_separated(gt, gt) == (3, 3)
    stack = np.stack([gt, np.zeros_like(gt)])
    assert touching_pairs_separated(stack, np.stack([pred, pred])) == (1, 3)
