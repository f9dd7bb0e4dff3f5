"""keras_unet.export.quantization.tflite_mixed: what it asks of the LiteRT quantizer, and what
it repairs in the files it writes.

A scalar constant read by an int8 op and by one kept at int16 (MobileNetV3's hard sigmoid):
the LiteRT quantizer gives each precision its own copy of the constant; the file must load
and compute what the all-int8 file computes, to within int8's rounding.
"""

import numpy as np
import pytest


def test_the_quantizers_progress_bars_stay_off_while_it_writes_a_file(capsys):
    pytest.importorskip("litert_quantizer")
    from litert_quantizer.utils import progress_utils

    from keras_unet.export.quantization.tflite_mixed import _no_progress_bars

    original = progress_utils.ProgressBar
    with _no_progress_bars():
        # What its model modifier builds for a model of 500 tensors, asked or not.
        for enable in (None, True):
            with progress_utils.ProgressBar(total_steps=500, description="Applying", enable=enable) as bar:
                bar.update_single_step()
    assert progress_utils.ProgressBar is original
    assert "Applying" not in capsys.readouterr().err
    with progress_utils.ProgressBar(total_steps=500, description="Applying", enable=True) as bar:
        bar.update_single_step()  # outside: the quantizer's own default again
    assert "Applying" in capsys.readouterr().err


def _hard_swish_net():
    """Two squeeze-style gates, x * relu6(conv(x) + 3) / 6 (a conv between, so the converter
    does not fuse a HARD_SWISH); it folds both 1/6 into one scalar constant."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for filters in (8, 8):
        x = keras.layers.Conv2D(filters, 3, padding="same")(x)
        gate = keras.layers.Conv2D(filters, 1)(x)
        x = keras.layers.Multiply()([x, keras.layers.ReLU(6.0)(gate + 3.0) * (1.0 / 6.0)])
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def _predict(model_bytes, images):
    import tempfile
    from pathlib import Path

    from keras_unet.runtime.tflite import TFLiteRunner

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        path.write_bytes(model_bytes)
        with TFLiteRunner(path, threads=1) as runner:
            return runner.predict(images)


def _constant_sizes(model_bytes) -> dict:
    """`{tensor name: (bytes its shape and type declare, bytes its buffer holds)}` of each
    constant: what the runtime checks before it loads the file."""
    from ai_edge_litert import schema_py_generated as schema

    itemsize = {schema.TensorType.INT8: 1, schema.TensorType.UINT8: 1, schema.TensorType.INT16: 2,
                schema.TensorType.INT32: 4, schema.TensorType.FLOAT32: 4, schema.TensorType.INT64: 8}
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    sizes = {}
    for tensor in model.subgraphs[0].tensors:
        data = model.buffers[tensor.buffer].data
        if data is not None and len(data) and tensor.type in itemsize:
            count = int(np.prod(tensor.shape)) if tensor.shape is not None else 1
            sizes[tensor.name] = (count * itemsize[tensor.type], len(data))
    return sizes


@pytest.mark.slow
def test_a_scalar_shared_by_int8_and_int16_ops_keeps_its_shape():
    from keras_unet.datasets import nuclei_path
    from keras_unet.export.job import open_job
    from keras_unet.export.options import ExportOptions
    from keras_unet.export.tflite import TFLITE_REWRITES, conversion_options
    from keras_unet.export.tflite_int8 import TFLiteSession
    from keras_unet.export.tflite_ops import _ops
    from keras_unet.runtime import imageio

    images, _ = imageio.load_dataset_arrays(nuclei_path(), size=(32, 32), channels=3)
    images = images[:24].astype("float32")
    options = ExportOptions(quantize="int8", calibration_data=images[:16],
                            verification_data=images[16:], progress=False)
    with open_job(_hard_swish_net(), options) as job:
        session = TFLiteSession(job, conversion_options(ExportOptions(quantize="int8")),
                                TFLITE_REWRITES)
        variant = session.variants[0]
        scaled = [node for node, op in session.quantizer._ops.items() if op == "MUL"
                  and "multiply" not in node.split(";")[0]]
        assert len(scaled) >= 2, session.quantizer._ops  # the two * (1/6)
        int8 = session.quantize([], variant)
        mixed = session.quantize([], variant, keep_int16=(scaled[-1],))
        assert session.refusal(mixed) is None
    # One MUL reads the 1/6 at int16, the other at int8: two copies, each the size it says.
    sizes = _constant_sizes(mixed)
    copies = [name for name in sizes if b"_duplicated_" in name]
    assert copies, sorted(sizes)
    assert all(declared == stored for declared, stored in sizes.values()), sizes
    reference = _predict(int8, images[16:])
    assert np.abs(_predict(mixed, images[16:]) - reference).max() < 0.05


@pytest.mark.slow
def test_an_input_rescaling_kept_at_int16_takes_the_general_add_kernel():
    """MobileNetV3's x / 127.5 - 1 at int16, over images that span 0..255: the three scales of
    its ADD are powers of two to TFLite's tolerance (2/32767, 1/32767, 1/32767), which sends
    it to the LSTM kernel that refuses a coarser input than output."""
    import keras
    from ai_edge_litert import schema_py_generated as schema

    from keras_unet.datasets import nuclei_path
    from keras_unet.export.job import open_job
    from keras_unet.export.options import ExportOptions
    from keras_unet.export.quantization.tflite_mixed import general_int16_additions
    from keras_unet.export.tflite import TFLITE_REWRITES, conversion_options
    from keras_unet.export.tflite_int8 import TFLiteSession
    from keras_unet.runtime import imageio

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))
    images, _ = imageio.load_dataset_arrays(nuclei_path(), size=(32, 32), channels=3)
    images = images[:24].astype("float32")
    images[:, :4, :4], images[:, -4:, -4:] = 0.0, 255.0  # the full input range
    options = ExportOptions(quantize="int8", calibration_data=images[:16],
                            verification_data=images[16:], progress=False)
    with open_job(model, options) as job:
        session = TFLiteSession(job, conversion_options(ExportOptions(quantize="int8",
                                                                      integer_only=True)),
                                TFLITE_REWRITES)
        variant = session.variants[0]
        int8 = session.quantize([], variant)
        mixed = session.quantize([], variant, keep_int16=tuple(session.leading_nodes()))
        assert session.refusal(mixed) is None
    adds = [op for op in schema.ModelT.InitFromPackedBuf(bytearray(mixed), 0).subgraphs[0].operators
            if isinstance(op.builtinOptions, schema.AddOptionsT)]
    assert adds and not any(op.builtinOptions.potScaleInt16 for op in adds)
    assert general_int16_additions(int8) is int8  # no int16 ADD: unchanged
    reference = _predict(int8, images[16:])
    assert np.abs(_predict(mixed, images[16:]) - reference).max() < 0.05
