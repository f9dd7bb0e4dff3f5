"""A small model with one deliberately bad layer for int8 tests (per-layer report, repair).

`Spike` adds 1000 to its input in an image whose bottom-right red pixel is 255, and nothing
in any other image. `keras_unet.export.calibration.pin_input_range` sets that pixel to 255 in
one calibration image, so calibration stretches the layer's int8 range to ~[-3, 1000] (a step
of ~4), and on images whose values stay within a few units int8 keeps almost nothing of it.
Keep that pixel below 255 in verification images.
"""

SIZE = (32, 32)


def spike_layer(rare=False):
    import keras
    from keras import ops

    # Registered so that a saved model with it loads (the CLI tests read a .keras file).
    @keras.saving.register_keras_serializable(package="keras_unet_tests")
    class Spike(keras.layers.Layer):
        """`features + 1000` in an image whose bottom-right red pixel is 255, else `features`."""

        def call(self, inputs):
            image, features = inputs
            return features + 1000.0 * ops.relu(image[:, -1:, -1:, :1] - 254.0)

    @keras.saving.register_keras_serializable(package="keras_unet_tests")
    class RareSpike(keras.layers.Layer):
        """`features + 1000` at each pixel whose red value is 255 (calibration: one pixel)."""

        def call(self, inputs):
            image, features = inputs
            return features + 1000.0 * ops.relu(image[..., :1] - 254.0)

    return RareSpike(name="spike") if rare else Spike(name="spike")


def spiky_model(normalization="unit", spike=True, stride=2, rare=False, spike_at="logit"):
    """The test model; `stride=1` keeps the input size (a segmentation model for the export
    pipeline, whose verification compares masks at the image size). `rare=True`: the
    spike fires per pixel, so in calibration only at the pixel `pin_input_range` sets to
    255: a range stretched by 0.002% of the values, which percentile ranges clip away.
    Keep red below 255 in verification images. `spike_at="features"` adds the spike to
    conv1's output instead of the logit: its int8 ADD then scales by more than XNNPack
    prepares (output scale ~5000x the input's), so the all-int8 file does not load."""
    import keras

    from keras_unet.layers import InputNormalization

    keras.utils.set_random_seed(0)
    inputs = keras.Input((*SIZE, 3), batch_size=1, name="image")
    x = InputNormalization(normalization, name="normalization")(inputs)
    x = keras.layers.ZeroPadding2D(3, name="pad")(x)  # as in ResNet50's stem
    x = keras.layers.Conv2D(8, 7, strides=stride, activation="relu", name="conv1")(x)
    if spike and spike_at == "features":
        x = spike_layer(rare)([inputs, x])
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(1, 1, name="head")(x)
    if spike and spike_at == "logit":
        x = spike_layer(rare)([inputs, x])
    outputs = keras.layers.Activation("sigmoid", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="spiky")


