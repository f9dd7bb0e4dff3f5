"""TFLite 16x8 files (8-bit weights, 16-bit activations), ops kept at int16 in an int8 file,
integer-only options, float ops.

The session's tiny trained UNet, calibrated on 64 nuclei images and compared with Keras on
the 32 it never saw (`held_out`).
"""

import numpy as np
import pytest

from keras_unet.export.options import ExportOptions
from keras_unet.export.tflite import (TFLITE_REWRITES, TFLiteOptions, conversion_options,
                                      float_ops, npu_fallbacks)


def _types(model_bytes):
    """`[(op name, [activation types of its non-constant inputs and outputs])]`."""
    from keras_unet.export.tflite_ops import _ops

    return [(op, [t for t, constant in inputs if not constant] + outputs)
            for op, _, inputs, outputs in _ops(model_bytes)]


def _agreement(model_bytes, images, reference):
    """Foreground IoU of the masks and max |p - Keras|, run by the project's TFLite runner."""
    import tempfile
    from pathlib import Path

    from keras_unet.runtime.tflite import TFLiteRunner

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        path.write_bytes(model_bytes)
        with TFLiteRunner(path, threads=1) as runner:
            probabilities = runner.predict(images)
    a, b = probabilities >= 0.5, reference >= 0.5
    return float((a & b).sum() / max((a | b).sum(), 1)), float(np.abs(probabilities - reference).max())


@pytest.fixture(scope="module")
def files(model, held_out):
    """The int8, 16x8 and integer-only files of one job, as the sessions write them."""
    from keras_unet.export.job import open_job
    from keras_unet.export.tflite_int8 import TFLiteSession

    from keras_unet.datasets import nuclei_path
    from keras_unet.runtime import imageio

    images, _ = imageio.load_dataset_arrays(nuclei_path(), size=(32, 32), channels=3)
    options = ExportOptions(quantize="int8", calibration_data=images[:64].astype("float32"),
                            verification_data=held_out, progress=False)
    made = {}
    with open_job(model, options) as job:
        for name, export in {
            "int8": ExportOptions(quantize="int8"),
            "int8_integer_only": ExportOptions(quantize="int8", integer_only=True),
            "int16x8": ExportOptions(quantize="int16x8"),
            "int16x8_integer_only": ExportOptions(quantize="int16x8", integer_only=True),
        }.items():
            session = TFLiteSession(job, conversion_options(export), TFLITE_REWRITES)
            made[name] = session.quantize([], session.variants[0])
            made[name + "_session"] = session
        int8 = made["int8_session"]
        made["kept_float_node"] = int8.leading_nodes()[0]
        made["kept_float"] = int8.quantize([made["kept_float_node"]], int8.variants[0])
        convs = [node for node, op in int8.quantizer._ops.items() if op == "CONV_2D"]
        made["kept_int16_nodes"] = (convs[0], convs[-3])  # the stem and a decoder conv
        made["kept_int16"] = int8.quantize([], int8.variants[0], keep_int16=made["kept_int16_nodes"])
        made["head_int16"] = int8.quantize([], int8.variants[0],
                                           keep_int16=tuple(int8.trailing_nodes()))
        made["int16x8_time_ms"] = made["int16x8_integer_only_session"].time_ms(
            made["int16x8_integer_only"])
    return made


def test_conversion_options_map_int16x8_and_integer_only():
    assert conversion_options(ExportOptions(quantize="int16x8")).io_dtype == "float32"
    only16 = conversion_options(ExportOptions(quantize="int16x8", integer_only=True))
    assert (only16.io_dtype, only16.integer_only) == ("int16", True)
    only8 = conversion_options(ExportOptions(quantize="int8", integer_only=True))
    assert (only8.io_dtype, only8.integer_only) == ("uint8", True)
    signed = conversion_options(ExportOptions(quantize="int8", integer_only=True, io_dtype="int8"))
    assert signed.io_dtype == "int8"
    # the default int8 options are what they were
    assert conversion_options(ExportOptions(quantize="int8")) == TFLiteOptions("int8", "uint8")


def test_bad_io_for_the_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="int16 with quantize='int16x8'"):
        TFLiteOptions(quantize="int8", io_dtype="int16")
    with pytest.raises(ValueError, match="int16 with quantize='int16x8'"):
        TFLiteOptions(quantize="int16x8", io_dtype="uint8")
    with pytest.raises(ValueError, match="integer-only TFLite file has integer input"):
        conversion_options(ExportOptions(quantize="int16x8", integer_only=True, io_dtype="float32"))


@pytest.mark.slow
def test_make_converter_targets_the_16x8_ops(untrained, held_out):
    import tensorflow as tf

    from keras_unet.export.job import open_job
    from keras_unet.export.tflite import make_converter

    with open_job(untrained, ExportOptions(quantize="int8", calibration_data=held_out[:4],
                                           verification_data=held_out, progress=False)) as job:
        int16 = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        fallback = make_converter(job, TFLiteOptions(quantize="int16x8"))
        assert set(fallback.target_spec.supported_ops) == {int16, tf.lite.OpsSet.TFLITE_BUILTINS}
        assert fallback.inference_input_type == tf.float32
        only = make_converter(job, TFLiteOptions("int16x8", "int16", integer_only=True))
        assert list(only.target_spec.supported_ops) == [int16]
        assert only.inference_input_type == only.inference_output_type == tf.int16


@pytest.mark.slow
def test_int16x8_has_16_bit_activations_everywhere_and_agrees_better_than_int8(
        model, held_out, files):
    reference = model.predict(held_out, verbose=0)
    for op, types in _types(files["int16x8_integer_only"]):
        # every activation is int16; weights (constants) are int8, biases int64
        assert types and set(types) == {"INT16"}, (op, types)
    assert "DEPTH_TO_SPACE" not in [op for op, _ in _types(files["int16x8"])]
    int8_agreement, int8_error = _agreement(files["int8"], held_out, reference)
    int16_agreement, int16_error = _agreement(files["int16x8"], held_out, reference)
    assert int16_agreement > int8_agreement and int16_agreement >= 0.99
    assert int16_error < int8_error
    # integer I/O gives the same numbers (the runner quantizes by the tensors' scales)
    only_agreement, _ = _agreement(files["int16x8_integer_only"], held_out, reference)
    assert abs(only_agreement - int16_agreement) < 1e-9
    assert files["int16x8_time_ms"] > 0


@pytest.mark.slow
def test_integer_only_files_have_integer_io_and_no_float_op(files):
    from keras_unet.export.tflite import describe

    only8, only16 = describe(files["int8_integer_only"]), describe(files["int16x8_integer_only"])
    assert (only8["input_dtype"], only8["output_dtype"]) == ("uint8", "uint8")
    assert (only16["input_dtype"], only16["output_dtype"]) == ("int16", "int16")
    assert only16["input_quantization"]["zero_point"] == 0  # int16 is symmetric in TFLite
    assert float_ops(files["int8_integer_only"]) == [] == float_ops(files["int16x8_integer_only"])
    assert npu_fallbacks(files["int8_integer_only"]) == []
    # every 16-bit op would fall back on a typical NPU delegate, and is named so
    fallbacks = npu_fallbacks(files["int16x8_integer_only"])
    assert fallbacks and all(line.endswith("16-bit activations") for line in fallbacks)
    assert any(line.startswith("CONV_2D (") for line in fallbacks)
    # float32 I/O: the edge QUANTIZE and DEQUANTIZE read or write float
    assert [line.split(" ")[0] for line in float_ops(files["int16x8"])] == ["QUANTIZE", "DEQUANTIZE"]


@pytest.mark.slow
def test_float_ops_names_a_kept_float_op(files):
    found = float_ops(files["kept_float"])
    assert any(line == f"CONV_2D ({files['kept_float_node']})" for line in found), found
    assert any(line.startswith("DEQUANTIZE (") for line in found)
    assert float_ops(files["int8"]) == []


@pytest.mark.slow
def test_the_16x8_session_keeps_nothing_else(files):
    session = files["int16x8_session"]
    assert session.can_keep_float is False and session.can_keep_int16 is False
    assert session.variants[0] == "minmax"
    assert session.report(None, [], "minmax") is None
    # keep_int16 means nothing in a 16x8 file
    assert session.quantize([], "minmax", keep_int16=("x",)) == files["int16x8"]
    with pytest.raises(ValueError, match="no denylist"):
        session.quantize([files["kept_float_node"]], "minmax")


@pytest.mark.slow
def test_keep_int16_puts_exactly_those_ops_at_16_bits(model, held_out, files):
    kept = set(files["kept_int16_nodes"])
    assert files["int8_session"].can_keep_int16
    from keras_unet.export.tflite_ops import _ops

    at_16 = []
    for op, name, inputs, outputs in _ops(files["kept_int16"]):
        activations = [t for t, constant in inputs if not constant] + outputs
        assert "FLOAT32" not in activations, (op, name)
        if op == "QUANTIZE":
            continue  # the int8 <-> int16 requantizations around each kept op
        if "INT16" in outputs:
            at_16.append(name)
            assert set(activations) == {"INT16"}, (op, name, activations)
        else:
            assert set(activations) <= {"INT8", "UINT8"}, (op, name, activations)
    assert set(at_16) == kept
    from keras_unet.export.tflite import describe

    info = describe(files["kept_int16"])
    assert (info["input_dtype"], info["output_dtype"]) == ("uint8", "uint8")  # as the int8 file
    # the runtime (XNNPack on, TFLite's int16 kernels) runs it and it segments like Keras
    reference = model.predict(held_out, verbose=0)
    agreement, _ = _agreement(files["kept_int16"], held_out, reference)
    int8_agreement, _ = _agreement(files["int8"], held_out, reference)
    assert agreement >= 0.95 and agreement >= int8_agreement - 0.02


@pytest.mark.slow
def test_a_head_at_int16_reaches_the_uint8_output_through_int8(model, held_out, files):
    from keras_unet.export.quantization.tflite_mixed import uint8_io_through_int8
    from keras_unet.export.tflite_ops import _ops

    ops = _ops(files["head_int16"])
    assert ops[-1][0] == "QUANTIZE" and ops[-1][3] == ["UINT8"]
    # TFLite's QUANTIZE converts int16 to int8, not to uint8: one step each way.
    for op, name, inputs, outputs in ops:
        if op == "QUANTIZE":
            assert {inputs[0][0], outputs[0]} != {"INT16", "UINT8"}, name
    assert sum(op != "QUANTIZE" and outputs == ["INT16"] for op, _, _, outputs in ops) >= 2
    reference = model.predict(held_out, verbose=0)
    agreement, _ = _agreement(files["head_int16"], held_out, reference)
    int8_agreement, _ = _agreement(files["int8"], held_out, reference)
    assert agreement >= 0.95 and agreement >= int8_agreement - 0.02
    assert uint8_io_through_int8(files["int8"]) is files["int8"]  # nothing to bridge


@pytest.mark.slow
def test_bad_keep_int16_and_float_in_integer_only_are_clear_errors(files):
    with pytest.raises(ValueError, match="`keep_int16` names tensors"):
        files["int8_session"].quantize([], "percentile", keep_int16=("no/such/op",))
    with pytest.raises(ValueError, match="integer-only file keeps no op in float"):
        files["int8_integer_only_session"].quantize([files["kept_float_node"]], "percentile")


# Through the export pipeline ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["int8", "int16x8"])
def test_an_integer_only_export_has_no_float_op_and_records_it(model, held_out, tmp_path, quantize):
    """`export_tflite(..., integer_only=True)`: the pipeline's rule reads the converter's
    `float_ops`, and the result and its summary list what an NPU delegate would not run."""
    from keras_unet.datasets import nuclei_path
    from keras_unet.export.tflite import export_tflite
    from keras_unet.runtime.metadata import read_metadata

    path = tmp_path / f"{quantize}.tflite"
    result = export_tflite(model, path, quantize=quantize, integer_only=True,
                           calibration_data=nuclei_path(), calibration_size=32,
                           verification_data=held_out, check_speed=False, progress=False)
    model_bytes = path.read_bytes()
    assert result.quantization == quantize and result.integer_only
    assert read_metadata(path)["integer_only"] is True
    assert float_ops(model_bytes) == [] and result.kept_float == []
    assert result.npu_fallbacks == npu_fallbacks(model_bytes)
    io_dtype = "uint8" if quantize == "int8" else "int16"
    assert (result.input_dtype, result.output_dtype) == (io_dtype, io_dtype)
    if quantize == "int8":  # only the ops repair kept at int16, if any
        assert all(op.endswith("16-bit activations") for op in result.npu_fallbacks)
        assert bool(result.npu_fallbacks) == bool(result.kept_int16)
    else:  # every op computes at 16-bit activations, which a typical NPU delegate does not run
        assert result.npu_fallbacks
        assert f"{len(result.npu_fallbacks)} op(s) a typical NPU delegate would not run" in (
            result.summary())


@pytest.mark.slow
def test_a_mixed_file_in_the_large_model_layout_still_loads_after_the_rewrites(files, monkeypatch):
    """Above 256 KB of constants the LiteRT quantizer stores them after the flatbuffer, by
    offset; the rewrites' object round trip would drop them. Forced here on the tiny model."""
    from litert_quantizer import model_modifier

    from keras_unet.runtime.tflite import interpreter_class

    monkeypatch.setattr(model_modifier.ModelModifier, "_serialize_small_model",
                        lambda self, model: self._serialize_model(
                            model, model_modifier._PackedBufferData(model)))
    session = files["int8_session"]
    model_bytes = session.quantize([], session.variants[0], keep_int16=files["kept_int16_nodes"])
    interpreter = interpreter_class()(model_content=model_bytes)
    interpreter.allocate_tensors()
    interpreter.invoke()
    assert model_bytes == files["kept_int16"]  # the same file as the inline layout gives
