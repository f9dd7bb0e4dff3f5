"""Images and masks on disk -> `tf.data.Dataset` (or a plain numpy iterator).

The meaning of files (pairing, channels, mask encodings, resizing) lives in
`keras_unet.runtime.imageio`, and pixels are read there with pillow, the one image reader
of keras-unet; this package checks a data set up-front with it, so that a bad file is
reported by name before training starts, then builds a fast input pipeline.

- `keras_unet.data.pairs`: argument checks, `check_pairs`, `split_pairs`.
- `keras_unet.data.pipeline`: `load_dataset`, the `tf.data` pipeline (TensorFlow is
  imported when it is called).
- `keras_unet.data.batches`: `iterate_batches`, numpy batches for any Keras backend.
- `keras_unet.data.augment`: `Augment`, built from Keras' preprocessing layers (Keras is
  imported when one is made).

Element convention (what `keras_unet.losses` and `keras_unet.metrics` expect):

- images: float32 `(B, H, W, channels)` in **[0, 255]** (the model normalises);
- masks: `(B, H, W, 1)` class indices, float32 0/1 for binary models
  (`num_classes=1`), int32 for multi-class; pixels to skip hold `ignore_index`. With
  `sample_weights=True` the elements are `(images, masks, weights)`, weights 0 on ignored
  pixels and 1 elsewhere, and ignored labels set to 0, for Keras' built-in losses.

Example:
```python
from keras_unet.data import Augment, load_dataset
from keras_unet.datasets import nuclei_path

train, val = load_dataset(nuclei_path(), image_size=(128, 128), channels=1,
                          validation_split=0.2, augment=Augment(seed=0), seed=0)
model.fit(train, validation_data=val, epochs=10)
```
"""

from keras_unet.data.augment import Augment
from keras_unet.data.batches import iterate_batches, steps_per_epoch
from keras_unet.data.pairs import check_pairs, split_pairs
from keras_unet.data.pipeline import load_dataset

__all__ = ["Augment", "check_pairs", "iterate_batches", "load_dataset", "split_pairs",
           "steps_per_epoch"]
