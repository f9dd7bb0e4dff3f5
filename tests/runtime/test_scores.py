import numpy as np
import pytest

from keras_unet.runtime import scores as accuracy


def test_binary_iou_and_dice_match_hand_computation():
    truth = np.array([[[1, 1, 0], [1, 0, 0], [0, 0, 0]]])
    pred = np.array([[[1, 0, 0], [1, 1, 0], [0, 0, 1]]])
    # foreground: tp=2, fp=2, fn=1 -> IoU 2/5, Dice 4/7; background: tp=4, fp=1, fn=2 -> IoU 4/7
    scores = accuracy.segmentation_scores(truth, pred, num_classes=1)
    assert scores["iou"] == pytest.approx(2 / 5)
    assert scores["dice"] == pytest.approx(4 / 7)
    assert scores["iou_per_class"] == pytest.approx([4 / 7, 2 / 5])
    assert scores["mean_iou"] == pytest.approx((4 / 7 + 2 / 5) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(6 / 9)


def test_multiclass_ignore_index_and_absent_class():
    truth = np.array([[0, 1, 1, 255], [2, 2, 0, 255]])
    pred = np.array([[0, 1, 2, 3], [2, 2, 0, 0]])
    # 255 pixels are ignored whatever was predicted there; class 3 never appears -> NaN, not in mean.
    scores = accuracy.segmentation_scores([truth], [pred], num_classes=4, ignore_index=255)
    expected = [1.0, 1 / 2, 2 / 3]
    assert scores["iou_per_class"][:3] == pytest.approx(expected)
    assert np.isnan(scores["iou_per_class"][3])
    assert scores["iou"] == pytest.approx(np.mean(expected))
    assert scores["pixels"] == 6


def test_masks_of_different_sizes_accumulate_one_matrix():
    a = np.ones((2, 2), int)
    b = np.zeros((3, 1), int)
    matrix = accuracy.confusion_matrix([a, b], [a, b], num_classes=1)
    assert matrix.tolist() == [[3, 0], [0, 4]]


def test_agreement_with_itself_is_one():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 3, (4, 9, 7))
    assert accuracy.agreement_iou(masks, masks.copy(), num_classes=3) == 1.0
    empty = np.zeros((2, 5, 5), int)
    assert accuracy.agreement_iou(empty, empty, num_classes=1) == 1.0


def test_agreement_below_one_when_masks_differ():
    reference = np.zeros((1, 4, 4), int)
    reference[0, :2] = 1
    other = reference.copy()
    other[0, 0, 0] = 0
    assert accuracy.agreement_iou(other, reference, num_classes=1) == pytest.approx(7 / 8)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="num_classes"):
        accuracy.segmentation_scores(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), num_classes=0)
    with pytest.raises(ValueError, match="same shape"):
        accuracy.segmentation_scores(np.zeros((1, 2, 2)), np.zeros((1, 2, 3)), num_classes=1)
    with pytest.raises(ValueError, match="ignore_index"):
        accuracy.segmentation_scores(np.full((1, 2, 2), 255), np.zeros((1, 2, 2)), num_classes=1)


@pytest.mark.parametrize("num_classes, ignore_index", [(1, None), (1, 7), (4, None), (4, 255)])
def test_numpy_scores_equal_the_training_metrics(num_classes, ignore_index):
    import keras_unet.metrics

    rng = np.random.default_rng(num_classes + (ignore_index or 0))
    classes = max(num_classes, 2)
    truth = rng.integers(0, classes, (3, 16, 12))
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, classes, truth.shape))
    if ignore_index is not None:
        truth[rng.random(truth.shape) < 0.1] = ignore_index
    # The training metrics take probabilities: a sigmoid channel or a softmax over classes.
    if num_classes == 1:
        probabilities = np.where(pred == 1, 0.9, 0.1)[..., None].astype("float32")
    else:
        probabilities = np.eye(num_classes, dtype="float32")[pred] * 0.8 + 0.05
    iou = keras_unet.metrics.IoU(num_classes, ignore_index=ignore_index)
    dice = keras_unet.metrics.Dice(num_classes, ignore_index=ignore_index)
    iou.update_state(truth[:2], probabilities[:2])
    iou.update_state(truth[2:], probabilities[2:])  # accumulated over batches, like ours
    dice.update_state(truth, probabilities)

    scores = accuracy.segmentation_scores(truth, pred, num_classes, ignore_index)
    assert scores["iou"] == pytest.approx(float(iou.result()), rel=1e-5)
    assert scores["dice"] == pytest.approx(float(dice.result()), rel=1e-5)
    np.testing.assert_allclose(scores["iou_per_class"], np.asarray(iou.per_class_result()), rtol=1e-5)
    np.testing.assert_allclose(scores["dice_per_class"], np.asarray(dice.per_class_result()), rtol=1e-5)


def _noisy_pairs(num_classes, flips, seed=0):
    rng = np.random.default_rng(seed)
    classes = max(num_classes, 2)
    reference = rng.integers(0, classes, (len(flips), 16, 16))
    masks = reference.copy()
    for image, share in enumerate(flips):
        changed = rng.random((16, 16)) < share
        masks[image][changed] = (reference[image][changed] + 1) % classes
    return masks, reference


@pytest.mark.parametrize("num_classes", [1, 4])
def test_the_bootstrap_resamples_the_gated_figure(num_classes):
    masks, reference = _noisy_pairs(num_classes, [0.0, 0.02, 0.1, 0.3, 0.05, 0.0])
    # The vectorised figure of one resample is mask_agreement's own.
    from keras_unet.runtime.scores import _gated_agreement, confusion_matrix

    matrix = confusion_matrix(reference, masks, num_classes)[None]
    assert _gated_agreement(matrix, num_classes == 1)[0] == pytest.approx(
        accuracy.mask_agreement(masks, reference, num_classes)["agreement_iou"])
    se = accuracy.agreement_standard_error(masks, reference, num_classes)
    assert 0.01 < se < 0.2
    assert se == accuracy.agreement_standard_error(masks, reference, num_classes)  # fixed seed


def test_the_standard_error_shrinks_with_agreeing_images_and_vanishes_without_spread():
    spread, reference = _noisy_pairs(1, [0.0, 0.3] * 4)
    steady, steady_reference = _noisy_pairs(1, [0.1] * 8)
    uniform = accuracy.agreement_standard_error(steady, steady_reference, 1)
    assert uniform < accuracy.agreement_standard_error(spread, reference, 1)
    assert accuracy.agreement_standard_error(reference, reference, 1) == 0.0
    assert accuracy.agreement_standard_error(spread[:1], reference[:1], 1) == 0.0
    with pytest.raises(ValueError, match="same number of masks"):
        accuracy.agreement_standard_error(spread[:2], reference[:3], 1)
