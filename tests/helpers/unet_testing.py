"""Shared checks for keras_unet layers and models (in the spirit of keras-hub's TestCase).

Every layer and model test goes through these, so each one is checked the same way:
config round trip, functional use, `.keras` round trip without `custom_objects`,
and one training step that actually changes the weights: for a layer, one eager gradient
step (milliseconds, fast lane); for a whole model, `Model.fit` (tests marked `slow`).
"""

import os

import keras
import numpy as np


def _symbolic_inputs(input_data):
    if isinstance(input_data, (list, tuple)):
        return [keras.Input(shape=x.shape[1:]) for x in input_data]
    return keras.Input(shape=input_data.shape[1:])


def assert_config_round_trip(obj):
    config = obj.get_config()
    clone = obj.__class__.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(revived) is type(obj)
    assert revived.get_config() == config
    return clone


def run_model_saving_test(model, input_data, tmp_path, atol=0.0):
    """Saves `model` as .keras, loads it back with no custom_objects, compares predictions."""
    path = os.path.join(tmp_path, f"{model.name}.keras")
    # Called, not `predict`: on a few images the traced predict function costs seconds per
    # model, and both sides run the same eager ops in the same order, so `atol=0` still holds.
    expected = keras.ops.convert_to_numpy(model(input_data, training=False))
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    actual = keras.ops.convert_to_numpy(loaded(input_data, training=False))
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=0)
    return loaded


def run_training_step_test(model, input_data, target, run_eagerly=True):
    """One fit step must move the trainable weights (catches silently frozen layers).

    Eager by default: one step of a traced train function spends most of its seconds tracing.
    The traced `fit` is exercised wherever a test trains for real (the shared trained UNet,
    the `train` command's tests).
    """
    before = [np.array(w) for w in model.trainable_weights]
    assert before, f"{model.name} has no trainable weights"
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", run_eagerly=run_eagerly)
    model.fit(input_data, target, epochs=1, batch_size=len(target), verbose=0)
    after = [np.array(w) for w in model.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def run_gradient_step_test(model, input_data, target):
    """One eager Adam step on the mean squared error must move the trainable weights.

    What `run_training_step_test` checks, without `Model.fit`'s loop, so a layer test stays
    in the fast lane (the fast-lane guard fails an unmarked test that fits). TensorFlow
    backend only: the gradient is taken with `tf.GradientTape`.
    """
    import tensorflow as tf

    before = [np.array(w) for w in model.trainable_weights]
    assert before, f"{model.name} has no trainable weights"
    with tf.GradientTape() as tape:
        outputs = model(input_data, training=True)
        loss = keras.ops.mean(keras.ops.square(keras.ops.convert_to_tensor(target, outputs.dtype)
                                               - outputs))
    gradients = tape.gradient(loss, model.trainable_weights)
    keras.optimizers.Adam(1e-2).apply(gradients, model.trainable_weights)
    after = [np.array(w) for w in model.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def run_layer_test(layer_cls, init_kwargs, input_data, expected_output_shape, tmp_path):
    """The full contract of a keras_unet layer. Returns the functional test model."""
    layer = layer_cls(**init_kwargs)
    assert_config_round_trip(layer)

    inputs = _symbolic_inputs(input_data)
    outputs = layer(inputs)
    assert tuple(outputs.shape[1:]) == tuple(expected_output_shape[1:])
    assert tuple(layer.compute_output_shape(
        [tuple(x.shape) for x in inputs] if isinstance(inputs, list) else tuple(inputs.shape)
    )[1:]) == tuple(expected_output_shape[1:])

    model = keras.Model(inputs, outputs, name="layer_test")
    eager = model(input_data)
    assert tuple(eager.shape) == tuple(expected_output_shape)

    run_model_saving_test(model, input_data, tmp_path)
    if model.trainable_weights:
        # One eager gradient step: tracing `fit`'s train step costs about 1.5 s per layer.
        # Whole models with every block option train with `fit` in
        # test_unet.test_options_train_and_round_trip, QAT layers in test_train_qat.
        run_gradient_step_test(model, input_data, np.random.default_rng(0).normal(size=eager.shape))
    return model
