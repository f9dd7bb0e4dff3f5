"""`UNet`: a subclassed `keras.Model` built functionally from the keras_unet layers."""

import keras
import numpy as np

from keras_unet.encoders import get_encoder
from keras_unet.layers import UPSAMPLE_MODES, DecoderBlock
from keras_unet.layers._validation import check_choice, check_positive_int, check_rate
from keras_unet.runtime.metadata import class_name_counts

OUTPUT_ACTIVATIONS = ("auto", "sigmoid", "softmax", None)


def _check_input_shape(input_shape, depth):
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels); height and width may be None. "
            f"Received: input_shape={input_shape!r}"
        )
    height, width, channels = input_shape
    check_positive_int("input_shape[-1] (channels)", channels)
    multiple = 2**depth
    for side, size in (("height", height), ("width", width)):
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(
                f"`input_shape` {side} must be a positive integer or None. "
                f"Received: input_shape={tuple(input_shape)!r}"
            )
        if size % multiple:
            raise ValueError(_size_message(input_shape, depth, f"{side} {size}"))
    return tuple(input_shape)


def check_class_names(class_names, num_classes):
    """`class_names` as a list of str, or None; raises `ValueError` for a wrong count.

    One name per class. A binary model (`num_classes=1`, one sigmoid output: the
    foreground) takes one name, the foreground's, or two, `[background, foreground]`
    (`keras_unet.runtime.metadata.class_name_counts`); exports store the names as given,
    and the last one names the foreground (MediaPipe's label of the one output channel,
    the foreground row of `keras-unet evaluate`).

    Example:
    ```python
    check_class_names(["background", "nucleus"], 1)   # ['background', 'nucleus']
    ```
    """
    if class_names is None:
        return None
    class_names = [str(c) for c in class_names]
    if len(class_names) not in class_name_counts(num_classes):
        raise ValueError(
            f"`class_names` must name each of the {num_classes} class(es)"
            f"{' (or background and foreground)' if num_classes == 1 else ''}. "
            f"Received: class_names={class_names!r}"
        )
    return class_names


def _size_message(input_shape, depth, what):
    multiple = 2**depth
    sizes = [s for s in input_shape[:2] if isinstance(s, int)] or [multiple]
    lower = max(multiple, min(sizes) // multiple * multiple)
    return (
        f"{what} does not work with depth={depth}: height and width must be multiples of "
        f"2**depth = {multiple} (for example {lower} or {lower + multiple}); resize or pad "
        f"the images, lower `depth`, or use None for any multiple. "
        f"Received: input_shape={tuple(input_shape)!r}"
    )


@keras.saving.register_keras_serializable(package="keras_unet")
class UNet(keras.Model):
    """U-Net for semantic segmentation (Ronneberger et al., 2015), with optional
    `keras.applications` encoders and attention gates (Oktay et al., 2018).

    The model takes images in **[0, 255]** (the normalisation an encoder expects is part
    of the model, so exported files need no preprocessing either) and returns
    probabilities: sigmoid for `num_classes=1`, softmax per pixel otherwise, always in
    float32, also under mixed precision.

    The defaults reproduce the original U-Net: 64..1024 filters, four 2x2 max-poolings,
    two ReLU 3x3 convolutions per stage, 2x2 stride-2 transposed convolutions and a 1x1
    sigmoid head; `UNet(input_shape=(128, 128, 3))` has 31,031,745 parameters.

    Args:
        input_shape: `(height, width, channels)`. Height and width must be multiples of
            `2**depth`, or None to accept any such size.
        num_classes: 1 for binary segmentation (sigmoid), >1 for one channel per class
            (softmax).
        filters: filters of the first stage; stage `i` has `filters * 2**i`. The decoder
            stage at stride `2**i` has `filters * 2**i` as well, whatever the encoder.
        depth: number of 2x downsamplings; at most 5 for `keras.applications` encoders.
        use_batchnorm: batch norm after each U-Net convolution.
        dropout: dropout rate inside each conv block.
        upsample: `"transpose"`, `"bilinear"` or `"nearest"`.
        use_attention: attention gates on the skip connections.
        residual: residual conv blocks.
        encoder: a name from `keras_unet.encoders.list_encoders()`.
        encoder_weights: None, `"imagenet"` (downloads through Keras) or the path of a
            local weights file for the encoder.
        encoder_trainable: False freezes the encoder (its batch norm then runs in
            inference mode).
        output_activation: `"auto"` (sigmoid if `num_classes == 1`, else softmax),
            `"sigmoid"`, `"softmax"` or None for logits.
        bn_momentum: momentum of every batch norm, the encoder's included. The default
            0.9 converges within a few hundred steps; keras.applications' own 0.999 does
            not, which shows as near-zero validation IoU after short training.
        class_names: optional names, one per class; for `num_classes=1`, the name of the
            foreground, or two names, `[background, foreground]` (`check_class_names`).
            Stored in the model and in every export's metadata, so evaluation and
            benchmark tables and MediaPipe's labels name the classes.
        ignore_index: the mask value that marks unlabelled pixels (void), or None. Stored in
            the model and in every export's metadata, so `evaluate` and `bench` leave
            those pixels out of the file's scores as training did; the loss and metrics
            take their own `ignore_index`.
        name: model name.
        **kwargs: standard `keras.Model` arguments.

    Example:
    ```python
    import numpy as np
    import keras_unet

    model = keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    masks = (images[..., :1] > 127).astype("float32")
    model.fit(images, masks, epochs=1, verbose=0)
    probabilities = model.predict(images, verbose=0)  # (8, 32, 32, 1)

    light = keras_unet.UNet((64, 64, 3), encoder="mobilenet_v2", filters=16,
                            encoder_weights=None, num_classes=3)
    ```

    References:
        Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
        Segmentation", MICCAI 2015. https://arxiv.org/abs/1505.04597
    """

    def __init__(
        self,
        input_shape=(128, 128, 3),
        num_classes=1,
        filters=64,
        depth=4,
        use_batchnorm=False,
        dropout=0.0,
        upsample="transpose",
        use_attention=False,
        residual=False,
        encoder="vanilla",
        encoder_weights=None,
        encoder_trainable=True,
        output_activation="auto",
        bn_momentum=0.9,
        class_names=None,
        ignore_index=None,
        name="unet",
        **kwargs,
    ):
        spec = get_encoder(encoder)
        check_positive_int("num_classes", num_classes)
        check_positive_int("filters", filters)
        check_positive_int("depth", depth)
        check_rate("dropout", dropout)
        check_choice("upsample", upsample, UPSAMPLE_MODES)
        check_choice("output_activation", output_activation, OUTPUT_ACTIVATIONS)
        if spec.max_depth is not None and depth > spec.max_depth:
            raise ValueError(
                f"Encoder '{encoder}' provides features down to stride {2**spec.max_depth}, "
                f"so depth must be <= {spec.max_depth}. Received: depth={depth}"
            )
        input_shape = _check_input_shape(input_shape, depth)
        class_names = check_class_names(class_names, num_classes)
        if ignore_index is not None:
            if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)) \
                    or ignore_index < 0:
                raise ValueError("`ignore_index` must be a non-negative integer or None. "
                                 f"Received: ignore_index={ignore_index!r}")
            ignore_index = int(ignore_index)
        if output_activation == "auto":
            output_activation = "sigmoid" if num_classes == 1 else "softmax"

        block_kwargs = {
            "use_batchnorm": use_batchnorm,
            "dropout": dropout,
            "residual": residual,
            "bn_momentum": bn_momentum,
        }
        inputs = keras.Input(shape=input_shape, name="image")
        built = spec.build(inputs, depth, filters, encoder_weights, block_kwargs)
        if not encoder_trainable:
            for layer in built.layers:
                layer.trainable = False

        x = built.features[2**depth]
        for level in reversed(range(depth)):
            skip = built.features.get(2**level)
            block = DecoderBlock(
                filters * 2**level,
                upsample=upsample,
                use_attention=use_attention,
                name=f"decoder_block_{level}",
                **block_kwargs,
            )
            x = block([x, skip] if skip is not None else x)
        logits = keras.layers.Conv2D(num_classes, 1, name="head")(x)
        # float32 output keeps probabilities and losses stable under mixed precision.
        outputs = keras.layers.Activation(
            output_activation or "linear", dtype="float32", name="probabilities"
        )(logits)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        self.input_shape_ = input_shape
        self.num_classes = num_classes
        self.filters = filters
        self.depth = depth
        self.use_batchnorm = use_batchnorm
        self.dropout = dropout
        self.upsample = upsample
        self.use_attention = use_attention
        self.residual = residual
        self.encoder = encoder
        self.encoder_weights = encoder_weights
        self.encoder_trainable = encoder_trainable
        self.output_activation = output_activation
        self.bn_momentum = bn_momentum
        self.class_names = class_names
        self.ignore_index = ignore_index

    def _check_image_size(self, shape):
        if shape is None or len(shape) != 4:
            return
        multiple = 2**self.depth
        for side, size in zip(("height", "width"), shape[1:3]):
            if isinstance(size, (int, np.integer)) and size % multiple:
                raise ValueError(
                    _size_message(tuple(shape[1:]), self.depth, f"Image {side} {int(size)}")
                )

    def call(self, inputs, training=None, mask=None):
        self._check_image_size(getattr(inputs, "shape", None))
        return super().call(inputs, training=training, mask=mask)

    def predict(self, x, *args, **kwargs):
        # predict() may retrace with relaxed (None) sizes, which call() cannot check.
        self._check_image_size(getattr(x, "shape", None))
        return super().predict(x, *args, **kwargs)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "input_shape": self.input_shape_,
            "num_classes": self.num_classes,
            "filters": self.filters,
            "depth": self.depth,
            "use_batchnorm": self.use_batchnorm,
            "dropout": self.dropout,
            "upsample": self.upsample,
            "use_attention": self.use_attention,
            "residual": self.residual,
            "encoder": self.encoder,
            "encoder_weights": None if self.encoder_weights is None else str(self.encoder_weights),
            "encoder_trainable": self.encoder_trainable,
            "output_activation": self.output_activation,
            "bn_momentum": self.bn_momentum,
            "class_names": self.class_names,
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Rebuilding from a config must not download or read encoder weights: a saved
        # model restores every weight from its own file right after this.
        config["encoder_weights"] = None
        config["input_shape"] = tuple(config["input_shape"])
        return cls(**config)
