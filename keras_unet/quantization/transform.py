"""`quantize_aware(model)`: the QAT copy of a trained model; `float_copy` for the exporters.

The rewrite runs over the graph that `flatten` produces, with `keras.models.clone_model`
(`call_function` decides what each node becomes), following `plan`:

- convolutions become `QuantizeAware*` layers (int8 weights per channel), with the batch
  norm after them folded in (`folding.fold_batch_norm`); the batch norm disappears;
- an `ActivationQuantizer` follows every output the plan marks, and the image input
  (fixed to [0, 255], so uint8 pixels are the int8 file's input codes, scale 1);
- every other layer or op is copied with its weights.

Example:
```python
import keras_unet
from keras_unet.quantization import quantize_aware

model = keras_unet.UNet((32, 32, 3), filters=4, depth=2, use_batchnorm=True)
qat = quantize_aware(model)
```
"""

import keras
from keras import ops, tree

from keras_unet.quantization.affine import affine_ops
from keras_unet.quantization.flatten import flatten
from keras_unet.quantization.folding import fold_batch_norm
from keras_unet.quantization.layers import QUANTIZE_AWARE_LAYERS, ActivationQuantizer
from keras_unet.quantization.model import QuantizeAwareModel, source_facts
from keras_unet.quantization.plan import plan

# The models' images are pixel values in [0, 255] (docs/ARCHITECTURE.md): uint8 input codes.
INPUT_RANGE = (0.0, 255.0)
QUANTIZE_AWARE_CLASSES = (ActivationQuantizer, *QUANTIZE_AWARE_LAYERS.values())


def _check_backend():
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            "Quantization-aware training needs the TensorFlow backend of Keras: the TFLite "
            "converter builds int8 kernels from TensorFlow's FakeQuantWithMinMaxVars ops, "
            "and the ONNX export goes through TensorFlow too. Set KERAS_BACKEND=tensorflow "
            f"(pip install tensorflow-cpu). Received: backend={backend!r}")


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={type(model).__name__}")
    if is_quantize_aware(model):
        raise ValueError(
            f"`model` is quantize-aware already; fine-tune it as it is. Received: model={model.name!r}")
    if len(model.inputs or []) != 1 or len(model.outputs or []) != 1:
        raise ValueError(
            "`model` must have one image input and one output. "
            f"Received: model with {len(model.inputs or [])} input(s)")


def _layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def is_quantize_aware(model):
    """Whether `model` (or a model nested in it) has fake-quantizing layers.

    Example:
    ```python
    import keras_unet
    from keras_unet.quantization import is_quantize_aware, quantize_aware

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    is_quantize_aware(quantize_aware(model))   # True
    is_quantize_aware(model)                   # False
    ```
    """
    return isinstance(model, QuantizeAwareModel) or any(
        isinstance(layer, QUANTIZE_AWARE_CLASSES) for layer in _layers(model))


def _copy(layer, args, kwargs):
    twin = type(layer).from_config(layer.get_config())
    outputs = twin(*args, **kwargs)
    if isinstance(layer, keras.layers.Layer) and layer.weights:
        twin.set_weights(layer.get_weights())
    return outputs


def _quantize_aware_convolution(layer, step, inputs):
    config = layer.get_config()
    weights = [ops.convert_to_numpy(w) for w in layer.weights]
    if step.folded is not None:
        config["use_bias"] = True
        weights = list(fold_batch_norm(layer, step.folded))
    twin = QUANTIZE_AWARE_LAYERS[type(layer).__name__].from_config(config)
    outputs = twin(inputs)
    twin.set_weights(weights)
    return outputs


def quantize_aware(model, ema_decay=0.99):
    """A trainable copy of `model` with int8 fake quantization of weights and activations.

    Weights are quantized per output channel, symmetric (int8, zero point 0); activations
    per tensor, asymmetric, over ranges that training tracks with moving averages (the
    first batch sets them) and inference keeps frozen. Batch norm is folded into the
    convolution before it, with its moving statistics, so training sees the kernels the
    int8 file computes with. Fine-tune the copy for a few epochs with a gentle optimizer
    (`SGD(1e-3, momentum=0.9)`), best towards the float model's own outputs
    (`keras_unet.quantization.distillation`, which has the measurements); the original
    model is left untouched.

    Args:
        model: a trained `keras_unet.UNet` (any encoder, upsampling, attention, with or
            without batch norm), or another functional model made of the layers in
            `keras_unet.quantization.registry`.
        ema_decay: moving-average weight of the activation ranges (see
            `ActivationQuantizer`).

    Returns:
        A `QuantizeAwareModel` with the source model's `num_classes`, `output_activation`,
        `class_names` and input shape; it saves and reloads as `.keras`.

    Raises:
        ValueError: not the TensorFlow backend; a layer the quantizer does not know (the
            message names each); a model that is quantize-aware already.

    Example:
    ```python
    import keras
    import keras_unet
    from keras_unet.data import load_dataset
    from keras_unet.datasets import nuclei_path
    from keras_unet.quantization import distillation_dataset, distillation_loss, quantize_aware

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)  # a trained model
    train, val = load_dataset(nuclei_path(), image_size=(32, 32), channels=1, batch_size=8,
                              validation_split=0.2, seed=0)
    qat = quantize_aware(model)
    qat.compile(keras.optimizers.SGD(1e-3, momentum=0.9), loss=distillation_loss(model))
    qat.fit(distillation_dataset(train.take(1), model), epochs=1, verbose=0)
    qat.save("qat.keras")   # export it with export_tflite("qat.keras", ..., quantize="int8")
    ```

    References:
        Jacob et al., "Quantization and Training of Neural Networks for Efficient
        Integer-Arithmetic-Only Inference", CVPR 2018. https://arxiv.org/abs/1712.05877
    """
    _check_backend()
    _check_model(model)
    flat = flatten(model)
    steps = plan(flat)
    image = flat.inputs[0]
    inputs = keras.Input(batch_shape=image.shape, dtype=image.dtype, name=image.name)
    quantized_image = ActivationQuantizer(fixed_range=INPUT_RANGE, name=f"{image.name}_quant")(inputs)

    def call(operation, *args, **kwargs):
        args, kwargs = tree.map_structure(
            lambda x: quantized_image if x is inputs else x, (args, kwargs))
        step = steps[id(operation)]
        if step.kind.kind == "weighted":
            outputs = _quantize_aware_convolution(operation, step, args[0])
        elif step.kind.kind == "affine":
            outputs = args[0]
            for index, op in enumerate(affine_ops(operation)):
                outputs = ActivationQuantizer(ema_decay, name=f"{operation.name}_{index}_quant")(op(outputs))
        elif step.folded_into is not None:
            outputs = args[0]
        else:
            outputs = _copy(operation, args, kwargs)
        if step.quantize_output:
            outputs = ActivationQuantizer(ema_decay, fixed_range=step.output_range,
                                          name=f"{operation.name}_quant")(outputs)
        return outputs

    rebuilt = keras.models.clone_model(flat, input_tensors=inputs, clone_function=lambda op: op,
                                       call_function=call)
    return QuantizeAwareModel(rebuilt.inputs[0], rebuilt.outputs[0], name=model.name,
                              source=source_facts(model))


def track_ranges(model, batches):
    """Set a QAT model's activation ranges from data without changing its weights.

    Runs `model` in training mode over `batches` (an array `(N, H, W, C)`, taken 8 images
    at a time, or an iterable of image batches or `(images, masks)` pairs, such as a
    `tf.data.Dataset`), so each `ActivationQuantizer` tracks its range
    as it would during `fit`; nothing else in a QAT model changes in training mode (its
    batch norms are folded), except that Dropout drops. For a model that post-training int8
    already handles well, this alone can do as much as fine-tuning (see
    docs/notes/2026-11-27-qat-distillation.md).

    Example:
    ```python
    import keras_unet
    from keras_unet.data import load_dataset
    from keras_unet.datasets import nuclei_path
    from keras_unet.quantization import check_ranges, quantize_aware, track_ranges

    model = keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2)
    train = load_dataset(nuclei_path(), image_size=(32, 32), channels=1, batch_size=8).take(2)
    qat = quantize_aware(model)
    track_ranges(qat, train)      # one pass over the training batches
    check_ranges(qat)             # passes
    ```
    """
    if hasattr(batches, "shape") and len(batches.shape) == 4:
        batches = [batches[start:start + 8] for start in range(0, len(batches), 8)]
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        model(images, training=True)
    return model


def check_ranges(model):
    """Raise `ValueError` if an activation range of `model` was never set by training.

    Example:
    ```python
    import numpy as np
    import keras_unet
    from keras_unet.quantization import check_ranges, quantize_aware, track_ranges

    qat = quantize_aware(keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2))
    try:
        check_ranges(qat)        # fails: no range was tracked yet
    except ValueError as error:
        print(error)
    track_ranges(qat, np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)))
    check_ranges(qat)            # passes
    ```
    """
    unset = [layer.name for layer in _layers(model)
             if isinstance(layer, ActivationQuantizer) and not layer.is_calibrated()]
    if unset:
        raise ValueError(
            f"{len(unset)} activation range(s) of this quantize-aware model were never set by "
            f"training (e.g. {', '.join(unset[:3])}): fine-tune it (model.fit) before exporting. "
            f"Received: model={model.name!r}")


def float_copy(model, bake_weights=True, keep_activation_quantizers=False, probes=None):
    """A plain Keras copy of a QAT model: the float graph its int8 files are made from.

    The quantize-aware convolutions become plain Conv2D/DepthwiseConv2D/Conv2DTranspose
    layers (batch norm stays folded into them). A model that wraps a QAT model (the
    exporters' fixed-size copy) is copied with the QAT graph inlined.

    Args:
        model: a quantize-aware model.
        bake_weights: store each kernel as its fake-quantized values (on the int8 grid, as
            float32), so that a quantizer reading them recovers the QAT int8 weights
            exactly. False keeps the float kernels (the folded model, unquantized).
        keep_activation_quantizers: keep the `ActivationQuantizer` layers (frozen ranges)
            instead of dropping them.
        probes: a dict to fill with `{quantizer name: (tensor it quantizes, quantizer)}`;
            `keras.Model(copy.inputs, [t for t, _ in probes.values()])` then computes
            those tensors (how `keras_unet.export.qat` finds them in the ONNX graph).

    Example:
    ```python
    import keras_unet
    from keras_unet.quantization import float_copy, quantize_aware

    qat = quantize_aware(keras_unet.UNet(input_shape=(32, 32, 1), filters=4, depth=2))
    plain = float_copy(qat)                       # what the ONNX quantizer starts from
    folded = float_copy(qat, bake_weights=False)  # == the source model, batch norm folded
    ```
    """
    if not is_quantize_aware(model):
        raise ValueError(f"`model` is not quantize-aware. Received: model={model.name!r}")
    image = model.inputs[0]
    inputs = keras.Input(batch_shape=image.shape, dtype=image.dtype, name=image.name)
    outputs = _float_graph(model, inputs, bake_weights, keep_activation_quantizers, probes)
    return keras.Model(inputs, outputs, name=model.name)


def _float_graph(model, inputs, bake_weights, keep_activation_quantizers, probes):
    """`model`'s graph rebuilt on `inputs` in plain layers; returns its output tensor."""

    def call(operation, *args, **kwargs):
        if isinstance(operation, ActivationQuantizer):
            if probes is not None:
                probes[operation.name] = (args[0], operation)
            if not keep_activation_quantizers:
                return args[0]
            return _copy(operation, args, kwargs)
        if isinstance(operation, tuple(QUANTIZE_AWARE_LAYERS.values())):
            return _plain_convolution(operation, args[0], bake_weights)
        if isinstance(operation, keras.Model):  # a wrapped QAT model: inline its graph
            return _float_graph(operation, args[0], bake_weights, keep_activation_quantizers, probes)
        return _copy(operation, args, kwargs)

    rebuilt = keras.models.clone_model(model, input_tensors=inputs, clone_function=lambda op: op,
                                       call_function=call)
    return rebuilt.outputs[0]


def _plain_convolution(layer, inputs, bake_weights):
    plain = type(layer).__mro__[1].from_config(layer.get_config())
    outputs = plain(inputs)
    weights = [ops.convert_to_numpy(layer.quantized_kernel() if bake_weights else layer.kernel)]
    if layer.use_bias:
        weights.append(ops.convert_to_numpy(layer.bias))
    plain.set_weights(weights)
    return outputs
