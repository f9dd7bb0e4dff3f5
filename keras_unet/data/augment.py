"""`Augment`: the same random flips, rotation and zoom for images and their masks.

Built from Keras' preprocessing layers (imported when an `Augment` is made), so it runs
inside `tf.data` and eagerly on numpy batches, on any Keras backend.

Example:
```python
from keras_unet.data import Augment

augment = Augment(flip="horizontal_and_vertical", rotation=0.05, seed=0)
images, masks = augment(images, masks.astype("float32"))
```
"""


class Augment:
    """Random flips, rotation, zoom, brightness and contrast applied alike to images and
    masks, built from Keras' preprocessing layers.

    Keras' image preprocessing layers take `{"images": ..., "segmentation_masks": ...}` and
    apply the same random transform to both, resampling masks with nearest neighbour
    (no new class values). Brightness and contrast change images only. Points moved in from
    outside the image are filled by reflection, in image and mask alike.

    Works inside `tf.data` (on any Keras backend: the layers switch to TensorFlow ops
    there) and eagerly on numpy batches. With a `seed` the sequence of transforms is
    reproducible.

    Args:
        flip: `"horizontal"`, `"vertical"`, `"horizontal_and_vertical"` or None.
        rotation: maximum rotation as a fraction of a full turn (0.05 = 18 degrees); 0 off.
        zoom: maximum zoom in or out as a fraction (0.1 = 10%); 0 off.
        brightness: maximum brightness change as a fraction of the [0, 255] range; 0 off.
        contrast: maximum contrast change factor; 0 off.
        seed: integer seed, or None.

    Call arguments:
        images: float32 `(B, H, W, C)` in [0, 255].
        masks: float32 `(B, H, W, 1)` class indices.

    Returns `(images, masks)`, both float32; masks still hold only the input's values.

    Example:
    ```python
    import numpy as np
    from keras_unet.data import Augment

    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    masks = (images[..., :1] > 127).astype("float32")
    augment = Augment(flip="horizontal_and_vertical", rotation=0.05, seed=0)
    images, masks = augment(images, masks)   # the same flip and rotation on both
    ```
    """

    def __init__(self, flip="horizontal_and_vertical", rotation=0.05, zoom=0.1,
                 brightness=0.1, contrast=0.1, seed=None):
        if flip not in (None, "horizontal", "vertical", "horizontal_and_vertical"):
            raise ValueError(
                "`flip` must be 'horizontal', 'vertical', 'horizontal_and_vertical' or None. "
                f"Received: flip={flip!r}"
            )
        for name, value in (("rotation", rotation), ("zoom", zoom),
                            ("brightness", brightness), ("contrast", contrast)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"`{name}` must be a number in [0, 1). Received: {name}={value!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an integer or None. Received: seed={seed!r}")
        self.flip = flip
        self.rotation = rotation
        self.zoom = zoom
        self.brightness = brightness
        self.contrast = contrast
        self.seed = seed

        import keras

        def layer_seed(offset):
            # Each layer draws from its own stream, so changing one factor does not
            # change the transforms the others pick.
            return None if seed is None else seed * 10 + offset

        self.layers = []
        if flip:
            self.layers.append(keras.layers.RandomFlip(flip, seed=layer_seed(1)))
        if rotation:
            self.layers.append(keras.layers.RandomRotation(rotation, fill_mode="reflect",
                                                           seed=layer_seed(2)))
        if zoom:
            self.layers.append(keras.layers.RandomZoom(zoom, fill_mode="reflect",
                                                       seed=layer_seed(3)))
        if brightness:
            self.layers.append(keras.layers.RandomBrightness(brightness, value_range=(0, 255),
                                                             seed=layer_seed(4)))
        if contrast:
            self.layers.append(keras.layers.RandomContrast(contrast, value_range=(0, 255),
                                                           seed=layer_seed(5)))

    def __call__(self, images, masks):
        data = {"images": images, "segmentation_masks": masks}
        for layer in self.layers:
            data = layer(data, training=True)
        return data["images"], data["segmentation_masks"]

    def get_config(self):
        """The constructor arguments.

        Example:
        ```python
        Augment(**Augment(seed=1).get_config())
        ```
        """
        return {"flip": self.flip, "rotation": self.rotation, "zoom": self.zoom,
                "brightness": self.brightness, "contrast": self.contrast, "seed": self.seed}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"Augment({args})"


def resolve_augment(augment, seed):
    """The augmentation `load_dataset` runs: None, a default `Augment(seed=seed)`, or the callable given.

    Example:
    ```python
    resolve_augment(True, seed=0)   # Augment(flip='horizontal_and_vertical', ..., seed=0)
    ```
    """
    if augment is True:
        return Augment(seed=seed)
    if augment in (False, None):
        return None
    if callable(augment):
        return augment
    raise ValueError(f"`augment` must be a bool or an `Augment` (or callable). Received: augment={augment!r}")

