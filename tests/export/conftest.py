"""Fixtures shared by the export tests.

A tiny UNet (32x32, filters=4, depth=2) is trained for a few seconds on the shipped nuclei
images so its masks are decisive: an untrained model's probabilities sit at 0.5, where any
rounding flips pixels and mask agreement measures nothing. It is trained once per session,
and only tests marked `slow` use it; option and input checks use `untrained` (built in
well under a second).
"""

import pytest

TRAINED_SIZE = (32, 32)


@pytest.fixture(scope="session")
def trained_unet_path(tmp_path_factory):
    """Path of the tiny trained UNet, as a .keras file."""
    import keras

    import keras_unet
    from keras_unet.runtime import imageio
    from keras_unet.datasets import nuclei_path

    path = tmp_path_factory.getbasetemp() / "export_tests_trained_unet.keras"
    images, masks = imageio.load_dataset_arrays(nuclei_path(), size=TRAINED_SIZE, channels=3)
    keras.utils.set_random_seed(0)
    model = keras_unet.UNet((*TRAINED_SIZE, 3), filters=4, depth=2)
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(images[:64].astype("float32"), masks[:64, ..., None].astype("float32"),
              batch_size=16, epochs=30, verbose=0)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def model(trained_unet_path):
    """The tiny trained UNet, loaded fresh for each test module."""
    import keras

    return keras.saving.load_model(trained_unet_path)


@pytest.fixture(scope="module")
def model_path(trained_unet_path):
    return trained_unet_path


@pytest.fixture(scope="module")
def held_out():
    """32 nuclei images the tiny UNet was not trained on, at its input size."""
    from keras_unet.runtime import imageio
    from keras_unet.datasets import nuclei_path

    images, _ = imageio.load_dataset_arrays(nuclei_path(), size=TRAINED_SIZE, channels=3)
    return images[150:182].astype("float32")


@pytest.fixture(scope="session")
def untrained_unet_path(tmp_path_factory):
    """An untrained tiny UNet saved as .keras: for checks that fail before any conversion."""
    import keras

    import keras_unet

    path = tmp_path_factory.getbasetemp() / "export_tests_untrained_unet.keras"
    keras.utils.set_random_seed(0)
    keras_unet.UNet((*TRAINED_SIZE, 3), filters=4, depth=2).save(path)
    return path


@pytest.fixture(scope="module")
def untrained(untrained_unet_path):
    import keras

    return keras.saving.load_model(untrained_unet_path)
