"""Fine-tune a QAT copy towards its float model's outputs (knowledge distillation).

The targets are the float model's probabilities on the same augmented batch (soft labels),
not the ground-truth masks: the aim is an int8 copy of the same model, and training on the
masks keeps training the model into a different one. Use SGD with momentum at a small
learning rate (`keras-unet train --qat` uses `SGD(--lr, momentum=0.9)`): adaptive optimizers
move every weight by about the learning rate, signal or not.

Why: see docs/notes/2026-11-27-qat-distillation.md.

Example:
```python
import keras
from keras_unet.data import load_dataset
from keras_unet.quantization import quantize_aware
from keras_unet.quantization.distillation import distillation_dataset, distillation_loss

train, val = load_dataset("data/train", validation_split=0.2, augment=True, seed=0)
qat = quantize_aware(model)
qat.compile(keras.optimizers.SGD(1e-3, momentum=0.9), loss=distillation_loss(model))
qat.fit(distillation_dataset(train, model), validation_data=val, epochs=3)
```
"""

import keras


def distillation_dataset(dataset, teacher, hard=False):
    """`dataset` of `(images, masks)` batches as `(images, teacher probabilities)`.

    Args:
        dataset: a `tf.data.Dataset` of `(images, masks[, weights])` batches (the masks and
            weights are dropped).
        teacher: the float model (inference mode); its outputs are the new targets.
        hard: the teacher's masks (`p >= 0.5`, or one-hot arg-max) instead of its
            probabilities: pushes pixels near the threshold away from it, so int8
            rounding flips fewer of them.

    Example:
    ```python
    import keras_unet
    from keras_unet.data import load_dataset
    from keras_unet.datasets import nuclei_path
    from keras_unet.quantization import distillation_dataset

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    train = load_dataset(nuclei_path(), image_size=(32, 32), channels=1, batch_size=8).take(1)
    images, targets = next(iter(distillation_dataset(train, model)))   # targets: model(images)
    ```
    """
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow" or not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            "`dataset` must be a tf.data.Dataset on the TensorFlow backend (as "
            f"keras_unet.data.load_dataset returns). Received: dataset={type(dataset).__name__}")

    def targets(images, *_):
        probabilities = teacher(images, training=False)
        if not hard:
            return images, probabilities
        if probabilities.shape[-1] == 1:
            return images, tf.cast(probabilities >= 0.5, probabilities.dtype)
        return images, tf.one_hot(tf.argmax(probabilities, axis=-1), probabilities.shape[-1])

    return dataset.map(targets, num_parallel_calls=1)


def distillation_loss(teacher):
    """Cross-entropy against soft targets: binary for one class, categorical for more.

    A model with logits (`output_activation=None`) gets the `from_logits` form; the
    targets are then the teacher's logits too, so give it a teacher with probabilities.

    Example:
    ```python
    import numpy as np
    import keras_unet
    from keras_unet.quantization import distillation_loss, quantize_aware

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    qat = quantize_aware(model)
    qat.compile("sgd", loss=distillation_loss(model))
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    qat.fit(images, model.predict(images, verbose=0), epochs=1, verbose=0)
    ```
    """
    from keras_unet.runtime.describe import describe_model

    facts = describe_model(teacher)
    if facts["output_activation"] is None:
        raise ValueError(
            "Distillation needs the teacher's probabilities; this model outputs logits. "
            "Received: output_activation=None")
    if facts["num_classes"] == 1:
        return keras.losses.BinaryCrossentropy(name="distillation")
    return keras.losses.CategoricalCrossentropy(name="distillation")
