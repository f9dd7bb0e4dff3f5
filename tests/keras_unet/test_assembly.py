"""`keras_unet.models.assembly`: the model a training run starts from, from its options."""

import keras
import numpy as np

from keras_unet.models.assembly import ModelOptions, build_unet, default_loss, initial_model

TINY = ModelOptions(image_size=(32, 48), channels=1, filters=4, depth=2, learning_rate=0.02)


def test_a_new_run_starts_from_a_compiled_unet_of_its_options():
    keras.utils.set_random_seed(0)
    model = initial_model(TINY)
    assert model.input_shape == (None, 32, 48, 1) and model.output_shape == (None, 32, 48, 1)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert np.isclose(float(model.optimizer.learning_rate), 0.02)
    assert type(model.loss).__name__ == "CrossEntropyDice"
    keras.utils.set_random_seed(0)
    same = build_unet(TINY)  # the same seed gives the same initial weights
    for a, b in zip(model.get_weights(), same.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_an_init_model_is_copied_not_shared():
    init = build_unet(TINY)
    model = initial_model(ModelOptions(image_size=(64, 64), num_classes=3), init=init)
    assert model is not init and model.output_shape == init.output_shape  # init's architecture
    for a, b in zip(model.get_weights(), init.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.set_weights([w * 0 for w in model.get_weights()])
    assert any(np.any(w) for w in init.get_weights())


def test_the_default_loss_follows_the_number_of_classes():
    assert (default_loss(1), default_loss(3)) == ("bce_dice", "ce_dice")


def test_the_ignored_label_of_the_options_is_stored_in_the_model_and_its_facts():
    """`train --ignore-index` reaches the model, so every export's metadata records it."""
    from dataclasses import replace

    from keras_unet.runtime.describe import describe_model

    model = build_unet(replace(TINY, num_classes=3, ignore_index=3))
    assert model.ignore_index == 3 and describe_model(model)["ignore_index"] == 3
    assert model.get_config()["ignore_index"] == 3
    assert build_unet(TINY).ignore_index is None
