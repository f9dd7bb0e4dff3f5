"""keras_unet.losses against numpy formulas written out here by hand, and against the
Keras losses they build on."""

import keras
import numpy as np
import pytest

from keras_unet import losses

RNG = np.random.default_rng(42)
K = 4
IGNORE = 11


def _softmax_batch():
    logits = RNG.normal(size=(2, 5, 6, K)).astype("float32")
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = RNG.integers(0, K, (2, 5, 6, 1))
    labels[0, :2, :3] = IGNORE
    return logits, probs.astype("float32"), labels


def _binary_batch():
    probs = RNG.uniform(0.01, 0.99, (2, 5, 6, 1)).astype("float32")
    labels = (RNG.random((2, 5, 6, 1)) > 0.6).astype("float32")
    return probs, labels


def _onehot_valid(labels, num_classes, ignore):
    valid = (labels[..., 0] != ignore).astype("float64")
    onehot = np.zeros(labels.shape[:-1] + (num_classes,))
    for c in range(num_classes):
        onehot[..., c] = (labels[..., 0] == c)
    return onehot, valid[..., None]


def _np_region(probs, onehot, valid, score, weights=None):
    tp = (probs * onehot * valid).sum(axis=(0, 1, 2))
    fp = (probs * (1 - onehot) * valid).sum(axis=(0, 1, 2))
    fn = ((1 - probs) * onehot * valid).sum(axis=(0, 1, 2))
    scores = score(tp, fp, fn)
    w = np.ones_like(scores) if weights is None else np.asarray(weights, float)
    return 1 - (scores * w).sum() / w.sum()


def _dice(tp, fp, fn, s=1.0):
    return (2 * tp + s) / (2 * tp + fp + fn + s)


def _jaccard(tp, fp, fn, s=1.0):
    return (tp + s) / (tp + fp + fn + s)


def _tversky(a, b, s=1.0):
    return lambda tp, fp, fn: (tp + s) / (tp + a * fp + b * fn + s)


@pytest.mark.parametrize("name,score,kwargs", [
    ("dice", _dice, {}),
    ("jaccard", _jaccard, {}),
    ("tversky", _tversky(0.3, 0.7), {"alpha": 0.3, "beta": 0.7}),
])
def test_region_losses_multiclass_with_ignore_and_weights(name, score, kwargs):
    _, probs, labels = _softmax_batch()
    onehot, valid = _onehot_valid(labels, K, IGNORE)
    weights = [0.5, 1.0, 2.0, 0.0]
    loss = losses.get_loss(name, ignore_index=IGNORE, class_weights=weights, **kwargs)
    expected = _np_region(probs.astype(float), onehot, valid, score, weights)
    np.testing.assert_allclose(float(loss(labels, probs)), expected, rtol=1e-5)
    # the ignored pixels matter: without ignore_index, label 11 is one-hot of nothing
    # and the pixels count as false positives
    plain = losses.get_loss(name, class_weights=weights, **kwargs)
    assert abs(float(plain(labels, probs)) - expected) > 1e-3


def test_dice_binary_and_from_logits():
    probs, labels = _binary_batch()
    expected = _np_region(probs.astype(float), labels, np.ones_like(labels), _dice)
    np.testing.assert_allclose(float(losses.Dice()(labels, probs)), expected, rtol=1e-5)
    logits = np.log(probs / (1 - probs))
    np.testing.assert_allclose(float(losses.Dice(from_logits=True)(labels, logits)), expected, rtol=1e-4)
    # labels without the channel axis read the same
    np.testing.assert_allclose(float(losses.Dice()(labels[..., 0], probs)), expected, rtol=1e-5)


def test_dice_binary_ignore_index():
    probs, labels = _binary_batch()
    labels[1] = 255
    expected = _np_region(probs[:1].astype(float), labels[:1], np.ones_like(labels[:1]), _dice)
    np.testing.assert_allclose(float(losses.Dice(ignore_index=255)(labels, probs)), expected, rtol=1e-5)


def test_cross_entropy_multiclass_ignore_and_weights():
    logits, probs, labels = _softmax_batch()
    onehot, valid = _onehot_valid(labels, K, IGNORE)
    weights = np.array([1.0, 2.0, 0.5, 1.0])
    ce = -(onehot * np.log(probs)).sum(-1, keepdims=True)
    pixel_w = valid * (onehot * weights).sum(-1, keepdims=True)
    expected = (ce * pixel_w).sum() / pixel_w.sum()
    loss = losses.CrossEntropy(ignore_index=IGNORE, class_weights=list(weights))
    np.testing.assert_allclose(float(loss(labels, probs)), expected, rtol=1e-5)
    from_logits = losses.CrossEntropy(ignore_index=IGNORE, class_weights=list(weights), from_logits=True)
    np.testing.assert_allclose(float(from_logits(labels, logits)), expected, rtol=1e-5)
    # without weights or ignored pixels it is keras' sparse categorical cross entropy
    clean = np.where(labels == IGNORE, 0, labels)
    reference = keras.losses.SparseCategoricalCrossentropy()(clean, probs)
    np.testing.assert_allclose(float(losses.CrossEntropy()(clean, probs)), float(reference), rtol=1e-5)


def test_binary_cross_entropy_matches_keras_and_background_weights():
    probs, labels = _binary_batch()
    reference = keras.losses.BinaryCrossentropy()(labels, probs)
    np.testing.assert_allclose(float(losses.get_loss("bce")(labels, probs)), float(reference), rtol=1e-5)
    bce = -(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
    w = np.where(labels == 1, 3.0, 1.0)
    expected = (bce * w).sum() / w.sum()
    weighted = losses.CrossEntropy(class_weights=[1.0, 3.0])
    np.testing.assert_allclose(float(weighted(labels, probs)), expected, rtol=1e-5)


def test_focal_binary_and_multiclass():
    probs, labels = _binary_batch()
    p_t = np.where(labels == 1, probs, 1 - probs)
    expected = np.mean(-(1 - p_t) ** 2 * np.log(p_t))
    np.testing.assert_allclose(float(losses.Focal(gamma=2.0)(labels, probs)), expected, rtol=1e-5)
    _, mprobs, mlabels = _softmax_batch()
    onehot, valid = _onehot_valid(mlabels, K, IGNORE)
    focal = -(onehot * (1 - mprobs) ** 1.5 * np.log(mprobs)).sum(-1, keepdims=True)
    expected = (focal * valid).sum() / valid.sum()
    loss = losses.Focal(gamma=1.5, ignore_index=IGNORE)
    np.testing.assert_allclose(float(loss(mlabels, mprobs)), expected, rtol=1e-5)
    # gamma = 0 is the cross entropy
    np.testing.assert_allclose(float(losses.Focal(gamma=0.0)(labels, probs)),
                               float(losses.CrossEntropy()(labels, probs)), rtol=1e-6)


def test_equal_to_the_keras_losses_they_build_on():
    _, probs, labels = _softmax_batch()
    # Keras' ignore_class: its mean runs over the valid pixels too
    keras_ce = keras.losses.SparseCategoricalCrossentropy(ignore_class=IGNORE)
    np.testing.assert_allclose(float(losses.CrossEntropy(ignore_index=IGNORE)(labels, probs)),
                               float(keras_ce(labels, probs)), rtol=1e-6)
    clean = np.where(labels == IGNORE, 0, labels)
    keras_focal = keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=1.5)
    np.testing.assert_allclose(float(losses.Focal(gamma=1.5)(clean, probs)),
                               float(keras_focal(np.eye(K)[clean[..., 0]], probs)), rtol=1e-6)
    bprobs, blabels = _binary_batch()
    keras_binary = keras.losses.BinaryFocalCrossentropy(gamma=2.0)
    np.testing.assert_allclose(float(losses.Focal()(blabels, bprobs)),
                               float(keras_binary(blabels, bprobs)), rtol=1e-6)
    # the region losses are computed here; without smoothing, binary Dice is Keras' Dice
    np.testing.assert_allclose(float(losses.Dice(smooth=0.0)(blabels, bprobs)),
                               float(keras.losses.Dice()(blabels, bprobs)), rtol=1e-5)


@pytest.mark.parametrize("name", ["ce", "focal", "dice", "ce_dice"])
def test_dense_labels_ignore_like_sparse_labels(name):
    _, probs, labels = _softmax_batch()
    onehot = np.eye(K, dtype="float32")[np.where(labels == IGNORE, 0, labels)[..., 0]]
    onehot[labels[..., 0] == IGNORE] = IGNORE
    loss = losses.get_loss(name, ignore_index=IGNORE, class_weights=[1.0, 2.0, 0.5, 1.0])
    np.testing.assert_allclose(float(loss(onehot, probs)), float(loss(labels, probs)), rtol=1e-6)


def test_binary_cross_entropy_ignore_index():
    probs, labels = _binary_batch()
    labels[1, :2] = 255
    keep = labels != 255
    bce = -(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
    w = np.where(labels == 1, 3.0, 1.0) * keep
    expected = (bce * w).sum() / w.sum()
    loss = losses.CrossEntropy(ignore_index=255, class_weights=[1.0, 3.0])
    np.testing.assert_allclose(float(loss(labels, probs)), expected, rtol=1e-5)


def test_from_logits_is_exact_for_confident_mistakes():
    # Keras' logits path: log-softmax / log-sigmoid, not log(clip(p, 1e-7)) = 16.1 at most
    logits = np.array([[[[30.0, 0.0]]]], "float32")
    value = losses.CrossEntropy(from_logits=True)(np.array([[[[1]]]]), logits)
    assert float(value) == pytest.approx(30.0, rel=1e-5)
    value = losses.CrossEntropy(from_logits=True)(np.ones((1, 1, 1, 1)), np.full((1, 1, 1, 1), -30.0))
    assert float(value) == pytest.approx(30.0, rel=1e-5)


def test_ce_dice_is_the_sum_and_one_hot_labels_agree():
    _, probs, labels = _softmax_batch()
    clean = np.where(labels == IGNORE, 1, labels)
    combined = losses.get_loss("ce_dice", ce_weight=0.5, dice_weight=2.0)
    expected = 0.5 * float(losses.CrossEntropy()(clean, probs)) + 2.0 * float(losses.Dice()(clean, probs))
    np.testing.assert_allclose(float(combined(clean, probs)), expected, rtol=1e-6)
    onehot = np.eye(K, dtype="float32")[clean[..., 0]]
    np.testing.assert_allclose(float(combined(onehot, probs)), expected, rtol=1e-6)


def test_multilabel_dense_targets():
    probs = RNG.uniform(0.05, 0.95, (2, 4, 4, 3)).astype("float32")
    target = (RNG.random((2, 4, 4, 3)) > 0.5).astype("float32")
    expected = _np_region(probs.astype(float), target, np.ones_like(target), _dice)
    np.testing.assert_allclose(float(losses.Dice(multilabel=True)(target, probs)), expected, rtol=1e-5)
    bce = -(target * np.log(probs) + (1 - target) * np.log(1 - probs)).mean()
    np.testing.assert_allclose(float(losses.CrossEntropy(multilabel=True)(target, probs)), bce, rtol=1e-5)
    with pytest.raises(ValueError, match="multilabel"):
        losses.Dice(multilabel=True)(target[..., :1], probs)


def test_perfect_prediction_gives_zero_region_loss():
    labels = RNG.integers(0, K, (1, 8, 8, 1))
    probs = np.eye(K, dtype="float32")[labels[..., 0]]
    for name in ("dice", "jaccard", "tversky"):
        assert float(losses.get_loss(name, smooth=0.0)(labels, probs)) == pytest.approx(0.0, abs=1e-6)


def test_float16_predictions_give_float32_loss():
    probs, labels = _binary_batch()
    value = losses.CrossEntropyDice()(labels, probs.astype("float16"))
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    expected = float(losses.CrossEntropyDice()(labels, probs.astype("float16").astype("float32")))
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_config_round_trip(name):
    loss = losses.get_loss(name, ignore_index=3, class_weights=[1.0, 2.0, 1.0])
    config = keras.saving.serialize_keras_object(loss)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
    labels = RNG.integers(0, 4, (1, 4, 4, 1))
    probs = np.full((1, 4, 4, 3), 1 / 3, "float32")
    assert float(restored(labels, probs)) == pytest.approx(float(loss(labels, probs)))
    # files saved before `keras_unet.losses` became a package name the old module
    config["module"] = "keras_unet.losses"
    assert type(keras.saving.deserialize_keras_object(config)) is type(loss)


@pytest.mark.slow
def test_model_compile_fit_and_keras_file(tmp_path):
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Conv2D(3, 1, activation="softmax")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile("adam", loss=losses.CEDice(ignore_index=IGNORE))
    x = RNG.random((4, 8, 8, 1)).astype("float32")
    y = RNG.integers(0, 3, (4, 8, 8, 1))
    y[0] = IGNORE
    history = model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(restored.loss, losses.CrossEntropyDice)
    assert restored.loss.ignore_index == IGNORE


def test_bad_arguments():
    with pytest.raises(KeyError, match="Valid names"):
        losses.get_loss("hinge")
    with pytest.raises(ValueError, match="class_weights"):
        losses.Dice(class_weights=[-1.0, 1.0])
    with pytest.raises(ValueError, match="ignore_index"):
        losses.Dice(ignore_index=1.5)
    with pytest.raises(ValueError, match="2 entries.*4 output"):
        losses.Dice(class_weights=[1.0, 1.0])(np.zeros((1, 2, 2, 1)), np.full((1, 2, 2, 4), 0.25))
    with pytest.raises(ValueError, match="class indices"):
        losses.CrossEntropy()(np.zeros((1, 2, 2, 2)), np.full((1, 2, 2, 4), 0.25))
    with pytest.raises(ValueError, match="gamma"):
        losses.Focal(gamma=-1.0)
