"""Fixtures and plugins shared by every test folder.

`fast_lane_guard` fails a test not marked `slow` that fits, converts, quantizes or starts a
TensorFlow process (see tests/helpers/fast_lane_guard.py). The tiny trained UNet below is
the one model every folder shares; it trains in seconds, so only `slow` tests may use it.
"""

import pytest

pytest_plugins = ("fast_lane_guard", "pytester", "slow_lane_schedule")

TRAINED_SIZE = (32, 32)


@pytest.fixture(scope="session")
def trained_unet_path(tmp_path_factory):
    """Path of a tiny UNet (32x32x3, filters=4, depth=2) trained on the shipped nuclei images.

    30 epochs on images 0-63 (seed 0) make its masks decisive: an untrained model's
    probabilities sit at 0.5, where any rounding flips pixels and mask agreement measures
    nothing. Images 150-181 (`held_out_images`) were never seen. Its one class is named
    "nucleus". The file is written under the session's (under xdist: the worker's) own
    temporary folder and never rewritten: tests load it and never change it.
    """
    import keras

    import keras_unet
    from keras_unet.datasets import nuclei_path
    from keras_unet.runtime import imageio

    path = tmp_path_factory.getbasetemp() / "trained_unet.keras"
    images, masks = imageio.load_dataset_arrays(nuclei_path(), size=TRAINED_SIZE, channels=3)
    keras.utils.set_random_seed(0)
    model = keras_unet.UNet((*TRAINED_SIZE, 3), filters=4, depth=2, class_names=["nucleus"])
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(images[:64].astype("float32"), masks[:64, ..., None].astype("float32"),
              batch_size=16, epochs=30, verbose=0)
    model.save(path)
    return path


@pytest.fixture(scope="session")
def held_out_images():
    """32 nuclei images (150-181) the tiny trained UNet never saw, at its input size, float32."""
    from keras_unet.datasets import nuclei_path
    from keras_unet.runtime import imageio

    images, _ = imageio.load_dataset_arrays(nuclei_path(), size=TRAINED_SIZE, channels=3)
    return images[150:182].astype("float32")
