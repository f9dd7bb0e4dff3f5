"""Fixtures shared by the export tests.

`model` is the session's tiny trained UNet (`trained_unet_path` in tests/conftest.py), loaded
fresh per module; only tests marked `slow` use it. Option and input checks use `untrained`
(built in well under a second).
"""

import pytest

TRAINED_SIZE = (32, 32)


@pytest.fixture(scope="module")
def model(trained_unet_path):
    """The tiny trained UNet, loaded fresh for each test module."""
    import keras

    return keras.saving.load_model(trained_unet_path)


@pytest.fixture(scope="module")
def model_path(trained_unet_path):
    return trained_unet_path


@pytest.fixture(scope="module")
def held_out(held_out_images):
    """32 nuclei images the tiny UNet was not trained on, at its input size."""
    return held_out_images.copy()


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
