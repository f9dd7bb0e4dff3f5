"""keras_unet.metrics against a confusion matrix counted by hand in numpy."""

import keras
import numpy as np
import pytest

from keras_unet import metrics
from keras_unet.runtime.scores import probabilities_to_masks, segmentation_scores

RNG = np.random.default_rng(7)


def _np_scores(true, pred, num_classes, ignore=None):
    """Per-class (iou, dice) from explicit loops over pixels; NaN for unseen classes."""
    true, pred = true.ravel(), pred.ravel()
    keep = np.ones_like(true, bool) if ignore is None else true != ignore
    true, pred = true[keep], pred[keep]
    iou, dice = [], []
    for c in range(num_classes):
        tp = np.sum((true == c) & (pred == c))
        fp = np.sum((true != c) & (pred == c))
        fn = np.sum((true == c) & (pred != c))
        seen = tp + fp + fn > 0
        iou.append(tp / (tp + fp + fn) if seen else np.nan)
        dice.append(2 * tp / (2 * tp + fp + fn) if seen else np.nan)
    return np.array(iou), np.array(dice)


def _multiclass_batches(num_classes=4, ignore=11):
    batches = []
    for _ in range(3):
        probs = RNG.random((2, 6, 5, num_classes)).astype("float32")
        labels = RNG.integers(0, num_classes, (2, 6, 5, 1))
        labels[0, :2] = ignore
        batches.append((labels, probs))
    return batches


def test_multiclass_mean_and_per_class_over_batches():
    batches = _multiclass_batches()
    iou, dice = metrics.IoU(4, ignore_index=11), metrics.Dice(4, ignore_index=11)
    for labels, probs in batches:
        iou.update_state(labels, probs)
        dice.update_state(labels, probs)
    true = np.concatenate([b[0][..., 0] for b in batches])
    pred = np.concatenate([b[1].argmax(-1) for b in batches])
    ref_iou, ref_dice = _np_scores(true, pred, 4, ignore=11)
    np.testing.assert_allclose(float(iou.result()), np.nanmean(ref_iou), rtol=1e-5)
    np.testing.assert_allclose(float(dice.result()), np.nanmean(ref_dice), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(iou.per_class_result()), ref_iou, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(dice.per_class_result()), ref_dice, rtol=1e-5)
    # keras' own MeanIoU agrees where it applies
    reference = keras.metrics.MeanIoU(4, ignore_class=11, sparse_y_pred=False)
    for labels, probs in batches:
        reference.update_state(labels, probs)
    np.testing.assert_allclose(float(iou.result()), float(reference.result()), rtol=1e-5)


def test_class_id_and_unseen_classes():
    labels = np.array([[0, 0, 1, 1, 5]]).reshape(1, 1, 5, 1)
    probs = np.eye(3, dtype="float32")[[0, 1, 1, 1, 0]].reshape(1, 1, 5, 3)
    iou1 = metrics.IoU(3, class_id=1, ignore_index=5)
    iou1.update_state(labels, probs)
    assert float(iou1.result()) == pytest.approx(2 / 3)
    mean = metrics.IoU(3, ignore_index=5)
    mean.update_state(labels, probs)
    # class 2 never appears: averaged over classes 0 and 1 only
    assert float(mean.result()) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert np.isnan(keras.ops.convert_to_numpy(mean.per_class_result())[2])


def test_binary_threshold_foreground_and_background():
    probs = RNG.random((3, 8, 8, 1)).astype("float32")
    labels = (RNG.random((3, 8, 8, 1)) > 0.5).astype("float32")
    labels[2, :3] = 255
    for threshold in (0.3, 0.7):
        pred = (probs[..., 0] >= threshold).astype(int)
        ref_iou, ref_dice = _np_scores(labels[..., 0].astype(int), pred, 2, ignore=255)
        iou = metrics.IoU(threshold=threshold, ignore_index=255)
        dice = metrics.Dice(threshold=threshold, ignore_index=255)
        background = metrics.IoU(class_id=0, threshold=threshold, ignore_index=255)
        for m in (iou, dice, background):
            m.update_state(labels, probs)
        np.testing.assert_allclose(float(iou.result()), ref_iou[1], rtol=1e-5)
        np.testing.assert_allclose(float(dice.result()), ref_dice[1], rtol=1e-5)
        np.testing.assert_allclose(float(background.result()), ref_iou[0], rtol=1e-5)


def test_binary_threshold_rule_is_p_at_least_threshold():
    # predicted [1, 1, 0, 1] under `p >= t`; under `p > t` it would be [0, 0, 0, 1] (IoU 1/3)
    for threshold in (0.5, 0.25, 0.7):  # float32(0.7) < 0.7: compared in float32 everywhere
        t = np.float32(threshold)
        probs = np.array([t, t, np.nextafter(t, np.float32(0)), 0.9], "float32").reshape(1, 1, 4, 1)
        labels = np.array([1, 0, 1, 1]).reshape(1, 1, 4, 1)
        iou, dice = metrics.IoU(threshold=threshold), metrics.Dice(threshold=threshold)
        iou.update_state(labels, probs)
        dice.update_state(labels, probs)
        assert float(iou.result()) == pytest.approx(2 / 4)
        assert float(dice.result()) == pytest.approx(4 / 6)
        # the same rule as the numpy scores that `predict`, `evaluate` and export use
        reference = segmentation_scores(labels[..., 0], probabilities_to_masks(probs, threshold), 1)
        assert float(iou.result()) == pytest.approx(reference["iou"])


def test_binary_matches_keras_binary_iou_on_foreground():
    probs = RNG.random((2, 8, 8, 1)).astype("float32")
    labels = (RNG.random((2, 8, 8, 1)) > 0.5).astype("int32")
    ours, theirs = metrics.IoU(), keras.metrics.BinaryIoU(target_class_ids=[1])
    ours.update_state(labels, probs)
    theirs.update_state(labels, probs)
    assert float(ours.result()) == pytest.approx(float(theirs.result()), rel=1e-6)


def test_soft_binary_targets_are_read_as_masks_by_the_same_rule():
    # `train --qat` distils from a teacher: its probabilities are the targets.
    rng = np.random.default_rng(3)
    teacher = rng.random((2, 8, 8, 1)).astype("float32")
    teacher[0, 0, :2, 0] = [0.0, 1.0]
    probs = rng.random((2, 8, 8, 1)).astype("float32")
    for threshold in (0.5, 0.3):
        soft, hard = metrics.IoU(threshold=threshold), metrics.IoU(threshold=threshold)
        soft.update_state(teacher, probs)
        hard.update_state((teacher >= threshold).astype("int32"), probs)
        assert float(soft.result()) == pytest.approx(float(hard.result()))
        assert 0.1 < float(soft.result()) < 1.0  # truncated targets: about 0.01
    # The student equal to its teacher scores 1, not the IoU of `p == 1` pixels.
    same = metrics.IoU()
    same.update_state(teacher, teacher)
    assert float(same.result()) == pytest.approx(1.0)


def test_one_hot_labels_and_reset():
    batches = _multiclass_batches(ignore=0)
    labels, probs = batches[0]
    onehot = np.eye(4, dtype="float32")[labels[..., 0]]
    sparse, dense = metrics.Dice(4), metrics.Dice(4)
    sparse.update_state(labels, probs)
    dense.update_state(onehot, probs)
    assert float(sparse.result()) == pytest.approx(float(dense.result()))
    sparse.reset_state()
    assert float(sparse.result()) == 0.0


@pytest.mark.slow
def test_in_model_compile_and_keras_file(tmp_path):
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs))
    model.compile("adam", loss="binary_crossentropy", metrics=metrics.get_metrics(1))
    x = RNG.random((4, 8, 8, 1)).astype("float32")
    y = (x > 0.5).astype("float32")
    model.fit(x, y, epochs=1, verbose=0)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    pred = (model.predict(x, verbose=0)[..., 0] >= 0.5).astype(int)
    ref_iou, ref_dice = _np_scores(y[..., 0].astype(int), pred, 2)
    assert logs["iou"] == pytest.approx(ref_iou[1], rel=1e-5, abs=1e-6)
    assert logs["dice"] == pytest.approx(ref_dice[1], rel=1e-5, abs=1e-6)
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert restored.evaluate(x, y, verbose=0, return_dict=True)["iou"] == pytest.approx(logs["iou"])


def test_config_round_trip_and_get_metrics():
    metric = metrics.Dice(5, class_id=2, threshold=0.4, ignore_index=11, name="d2")
    restored = metrics.Dice.from_config(metric.get_config())
    assert restored.get_config() == metric.get_config()
    names = [m.name for m in metrics.get_metrics(3, ignore_index=11, per_class=True)]
    assert names == ["iou", "dice", "iou_0", "iou_1", "iou_2"]
    assert (metrics.IoU().name, metrics.Dice(3).name) == ("iou", "dice")


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        metrics.IoU(0)
    with pytest.raises(ValueError, match="class_id"):
        metrics.IoU(3, class_id=3)
    with pytest.raises(ValueError, match="threshold"):
        metrics.Dice(threshold=1.5)
