"""Per-layer int8 error of a TFLite conversion, and int8 files with chosen ops kept in float.

Built on `tf.lite.experimental.QuantizationDebugger`: it calibrates the converter once,
quantizes the calibrated model with a NumericVerify op after every quantized op (which
runs the float op on the same dequantized input and returns the difference) and
re-quantizes from the same calibration with other `denylisted_nodes`. `TFLiteQuantizer`
keeps one debugger, so a repair loop calibrates once however often it re-quantizes.

What the debugger does not do, done here:

- **Right ranges.** TFLite's calibrator widens the range of a tensor that an in-place
  op (ADD, SUB, MUL) consumes; `TFLiteQuantizer` measures those ranges again first
  (`tflite_ranges`, on by default).
- **16x8 files.** With a converter targeting
  `EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`, `quantize` writes 16-bit
  activations from the same calibration and variants (`tflite_int16.quantize_16x8`); no op
  can be kept in float there, and `report` measures the int8 quantization.
- **Deployable files.** The debugger's own models (`get_debug_quantized_model`,
  `get_nondebug_quantized_model`) come with float32 input and output, which MediaPipe
  and a uint8 camera pipeline reject; `fully_quantize=True` gives int8 I/O, never uint8.
  `TFLiteQuantizer.quantize` calls the quantizer `TFLiteConverter.convert` itself runs
  after calibration (`tensorflow.lite.python.convert.mlir_quantize`) with the
  converter's `inference_input_type`/`inference_output_type` and the denylist: the file
  keeps uint8 I/O and built-in ops, with a DEQUANTIZE before and a QUANTIZE after each
  op kept in float. The converter has no public denylist option (TF 2.21).
- **SQNR.** The report adds the float tensor's power (`layer_direct_compare_metrics`) on
  a second debugger built from the debug model's bytes, which preserves intermediate
  tensors (one built from a converter does not, so those comparisons could read
  reused buffers).

The calibration pass turns the converter into a calibrate-only converter while it runs;
its flags are restored afterwards, so `converter.convert()` still gives the int8 file.

Example:
```python
from keras_unet.export.quantization import TFLiteQuantizer, format_worst_layers

quantizer = TFLiteQuantizer(converter)          # an int8 converter, representative_dataset set
rows = quantizer.report(images, model=model)    # images: (N, H, W, C) in [0, 255]
print(format_worst_layers(rows))
model_bytes = quantizer.quantize(keep_float=[rows[0]["node"]])
```
"""

import contextlib
import csv
import io
import math
import warnings
from typing import Any

import numpy as np

from keras_unet.export.quantization.variants import BIAS_SUFFIX, GPTQ_SUFFIX
from keras_unet.export.quantization.report import (keras_layer_name, layer_names, make_row,
                                                   output_layer_names, sort_rows, sqnr_db)
from keras_unet.export.quantization.tflite_graph import tensor_consumers, tensor_ops

# Calibrations `TFLiteQuantizer` quantizes from (see `TFLiteQuantizer.calibrated_for`).
# Each calibration also has a "+bias" form, its convolutions' biases corrected for the int8
# weights (bias_correction), and a "+gptq" form, their weights rounded against the
# calibration data (weight_rounding).
CALIBRATIONS = ("minmax", "percentile")
VARIANTS = CALIBRATIONS + tuple(base + suffix for suffix in (BIAS_SUFFIX, GPTQ_SUFFIX)
                                for base in CALIBRATIONS)
# Ops that multiply by weights: where a model's stem ends and its head starts
# (`leading_ops`, `trailing_ops`).
TFLITE_COMPUTE_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED",
                                "BATCH_MATMUL"})


@contextlib.contextmanager
def _quiet():
    # Once per interpreter the debugger opens: tf.lite.Interpreter's deprecation, and the
    # note that preserving all tensors (what the measuring debugger needs) costs memory.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*experimental_preserve_all_tensors.*")
        yield


def _signal_power(float_tensor, quant_tensor, scale, zero_point):
    del quant_tensor, scale, zero_point
    return float(np.mean(np.square(float_tensor, dtype=np.float64)))


def _dataset(images):
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            "`images` must be a non-empty array (N, H, W, C) of images in [0, 255]. "
            f"Received: images.shape={images.shape}"
        )

    def generator():
        for image in images:
            yield [image[None]]

    return generator


def _calibration_samples(converter):
    # convert() wraps the callable in a RepresentativeDataset; both give input lists.
    dataset = converter.representative_dataset
    return getattr(dataset, "input_gen", dataset)()


class TFLiteQuantizer:
    """Calibrates an int8 `tf.lite.TFLiteConverter` once, then reports and re-quantizes.

    Args:
        converter: a converter configured for full-integer quantization:
            `optimizations=[tf.lite.Optimize.DEFAULT]`, `representative_dataset` set,
            built-in int8 ops, `inference_input_type`/`inference_output_type` as the file
            should have them (e.g. `keras_unet.export.tflite.make_converter`).
        fix_ranges: measure the activation ranges again on the calibration images and
            replace those TFLite's calibrator widened (see `tflite_ranges`); the tensors
            changed are listed in `widened_ranges` as `(tensor name, width ratio)`.

    Attributes:
        calibrated_model: the calibrated float model (ranges fixed) every
            quantization starts from.
        widened_ranges: tensors whose recorded range was replaced.

    Example:
    ```python
    quantizer = TFLiteQuantizer(converter)
    rows = quantizer.report(images)
    int8_bytes = quantizer.quantize(keep_float=[rows[0]["node"]])
    ```
    """

    _CALIBRATION_FLAGS = ("_experimental_calibrate_only", "experimental_mlir_quantizer")

    def __init__(self, converter, fix_ranges=True):
        import tensorflow as tf

        from keras_unet.export.quantization.softmax_range import softmax_ranges
        from keras_unet.export.quantization.tflite_ranges import (sample_tensors, set_ranges,
                                                                  widened_ranges)

        if not converter.optimizations or converter.representative_dataset is None:
            raise ValueError(
                "TFLiteQuantizer needs an int8 converter: set "
                "`converter.optimizations = [tf.lite.Optimize.DEFAULT]` and a "
                "`converter.representative_dataset` of real images. Received: "
                f"optimizations={converter.optimizations!r}, representative_dataset="
                f"{converter.representative_dataset!r}"
            )
        self.converter = converter
        # A 16x8 converter (`EXPERIMENTAL_..._INT16_WEIGHTS_INT8`): same calibration, files
        # written by `tflite_int16.quantize_16x8`; `report` stays int8 (the debugger's).
        ops = set(converter.target_spec.supported_ops)
        int16 = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        self.activations_type = "int16" if int16 in ops else "int8"
        self._allow_float = tf.lite.OpsSet.TFLITE_BUILTINS in ops
        # The debugger sets these two for its calibration pass and leaves them set.
        saved = {name: getattr(converter, name) for name in self._CALIBRATION_FLAGS
                 if hasattr(converter, name)}
        io_types = (converter.inference_input_type, converter.inference_output_type)
        if self.activations_type == "int16":
            # Calibration gives a float model; TF would then retype its I/O to int16 and fail.
            converter.inference_input_type = converter.inference_output_type = tf.float32
        try:
            with _quiet():
                self._debugger = tf.lite.experimental.QuantizationDebugger(converter=converter)
        finally:
            for name in self._CALIBRATION_FLAGS:
                if name in saved:
                    setattr(converter, name, saved[name])
                elif hasattr(converter, name):
                    delattr(converter, name)
            converter.inference_input_type, converter.inference_output_type = io_types
        calibrated = self._debugger.calibrated_model
        self.widened_ranges = []
        # One pass over the calibration images gives the true min/max and the sample the
        # percentile variant reads its ranges from.
        self._sampler = sample_tensors(calibrated, _calibration_samples(converter))
        ranges = self._sampler.min_max()
        changed = {}
        if fix_ranges:
            self.widened_ranges = widened_ranges(calibrated, ranges, factor=1.01)
            changed = {name: ranges[name] for name, _ in self.widened_ranges}
        # 8-bit logits no wider than the softmax can show (softmax_range); 16-bit ones keep
        # their range.
        self._softmax_logits = (self._sampler.softmax_logits
                                if self.activations_type == "int8" else {})
        changed.update(softmax_ranges(self._softmax_logits, ranges, 100.0))
        if changed:
            calibrated = set_ranges(calibrated, changed)
            self._debugger.calibrated_model = calibrated
        self.calibrated_model = calibrated
        self._ops, self._outputs = tensor_ops(calibrated)
        self._consumers = tensor_consumers(calibrated)
        self._calibrated = {"minmax": calibrated}
        self._corrected: dict = {}  # (variant, ops kept in float) -> corrected or rounded model
        self._moments = None  # input_moments
        # weight_rounding.rounded_once's memo: the moments, hence each rounding, are the same
        # for every calibration (input_moments).
        self._rounded_kernels: dict = {}
        # The debugger quantized the original calibration; re-quantize on first use.
        self._quantized_as = ("minmax", ()) if not changed else None

    def calibrated_for(self, variant, keep_float=()) -> Any:
        """The calibrated model of a calibration `variant` (see `VARIANTS`).

        `"minmax"`: each activation's full calibration range (TFLite's own, with the
        ranges its calibrator widened measured again). `"percentile"`: each op output's
        range clipped at the 99.99th percentile on each side (`ranges.RangeSampler`); the
        model's output keeps its full range, so no probability saturates. In both, an int8
        softmax's input (a multi-class model's logits) is narrowed to what the softmax can
        show (`softmax_range`: the exact extremes for `"minmax"`, the tails for
        `"percentile"`). A `"+bias"`
        variant has those ranges and each convolution's bias corrected for its int8
        weights (`bias_correction`), a `"+gptq"` variant each convolution's weights rounded
        against the calibration images (`weight_rounding`); the ops in `keep_float` keep
        theirs.
        """
        from keras_unet.export.quantization.bias_correction import tflite_correct_biases
        from keras_unet.export.quantization.ranges import DEFAULT_PERCENTILE
        from keras_unet.export.quantization.softmax_range import softmax_ranges
        from keras_unet.export.quantization.tflite_ranges import set_ranges
        from keras_unet.export.quantization.variants import parse_variant
        from keras_unet.export.quantization.weight_rounding import tflite_round_weights

        if variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {list(VARIANTS)}. Received: variant={variant!r}")
        parsed = parse_variant(variant)
        base = parsed.base
        if base not in self._calibrated:
            clipped = self._sampler.ranges(DEFAULT_PERCENTILE)
            ranges = {name: clipped[name] for name in self._ops
                      if name in clipped and name not in self._outputs}
            ranges.update(softmax_ranges(self._softmax_logits, ranges, DEFAULT_PERCENTILE))
            self._calibrated[base] = set_ranges(self.calibrated_model, ranges)
        if parsed.treatment is None:
            return self._calibrated[base]
        key = (variant, tuple(sorted(keep_float)))
        if key not in self._corrected:
            if parsed.corrected:
                self._corrected[key] = tflite_correct_biases(
                    self._calibrated[base], self._sampler.channel_means(), keep=keep_float)
            else:
                self._corrected[key] = tflite_round_weights(
                    self._calibrated[base], self.input_moments(), keep=keep_float,
                    memo=self._rounded_kernels)
        return self._corrected[key]

    def input_moments(self) -> dict:
        """Each convolution's input moments over the calibration images (`weight_rounding`),
        measured on first use: the float activations are the same for every calibration."""
        from keras_unet.export.quantization.weight_rounding import tflite_input_moments

        if self._moments is None:
            self._moments = tflite_input_moments(self.calibrated_model,
                                                 _calibration_samples(self.converter))
        return self._moments

    def _calibrated_name(self, tensor_name):
        """The calibrated model's name for a tensor the debugger's quantized model names.

        Quantization can extend a fused op's tensor name (`...Squeeze1;.../conv_transpose`
        for a TRANSPOSE_CONV); `denylisted_nodes` needs the calibrated model's name, the
        longest one the debugger's name starts with.
        """
        if tensor_name in self._ops:
            return tensor_name
        prefixes = [name for name in self._ops if tensor_name.startswith(name)]
        return max(prefixes, key=len) if prefixes else tensor_name

    def with_consumers(self, nodes) -> list:
        """`nodes` plus the ops that read their outputs.

        An op kept in float still hands its consumer a tensor quantized at the range
        calibration recorded for it; when that range is the problem (stretched by
        outliers), only keeping the consumer in float too removes the error.

        Example:
        ```python
        quantizer.with_consumers(["m/spike/add"])  # ['m/spike/add', 'StatefulPartitionedCall_1:0']
        ```
        """
        chosen = list(dict.fromkeys(nodes))
        for node in list(chosen):
            for consumer in self._consumers.get(node, []):
                if consumer in self._ops and consumer not in chosen:
                    chosen.append(consumer)
        return chosen

    def leading_ops(self) -> list:
        """The stem's ops (`report.leading_nodes`), for `quantize(keep_float=...)`.

        Example:
        ```python
        quantizer.leading_ops()  # ['.../rescaling_1/mul', '.../conv_1/convolution...', ...]
        ```
        """
        from keras_unet.export.quantization.report import leading_nodes

        return leading_nodes(self._op_list(), TFLITE_COMPUTE_OPS)

    def trailing_ops(self) -> list:
        """The head's ops (`report.trailing_nodes`), for `quantize(keep_float=...)`.

        Example:
        ```python
        quantizer.trailing_ops()  # ['.../block_1/conv2_1/...', '.../head_1/...', 'StatefulPartitionedCall_1:0']
        ```
        """
        from keras_unet.export.quantization.report import trailing_nodes

        return trailing_nodes(self._op_list(), TFLITE_COMPUTE_OPS)

    def _op_list(self) -> list:
        """`(node, op type, input tensors, [node])` of the calibrated model's ops, in order."""
        inputs: dict = {node: [] for node in self._ops}
        for tensor, readers in self._consumers.items():
            for reader in readers:
                if reader in inputs:
                    inputs[reader].append(tensor)
        return [(node, op, inputs[node], [node]) for node, op in self._ops.items()]

    def _check_nodes(self, keep_float, argument="keep_float"):
        keep_float = tuple(dict.fromkeys(str(node) for node in keep_float))
        unknown = [node for node in keep_float if node not in self._ops]
        if unknown:
            raise ValueError(
                f"`{argument}` names tensors the calibrated model does not have: pass the "
                f"`node` of a report row. Received: {unknown[:3]}"
            )
        return keep_float

    def _requantize(self, keep_float, variant):
        import tensorflow as tf

        if (variant, keep_float) != self._quantized_as:
            self._debugger.calibrated_model = self.calibrated_for(variant, keep_float)
            with _quiet():  # setting the options quantizes the calibrated model again
                self._debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                    denylisted_nodes=list(keep_float) or None)
            self._quantized_as = (variant, keep_float)

    def report(self, images, keep_float=(), model=None, variant="minmax") -> list:
        """Per-tensor int8 error on `images`, worst first (see `report.COLUMNS`).

        Args:
            images: verification images `(N, H, W, C)` in [0, 255], ideally not the
                calibration images.
            keep_float: `node` values of ops to leave in float; they get rows with
                `kept_float=True` and no figures.
            model: the Keras model (or its layer names), to name rows by Keras layer.
            variant: the calibration (`calibrated_for`).

        Example:
        ```python
        rows = TFLiteQuantizer(converter).report(images, model=model)
        rows[0]  # {'name': 'normalization', 'op': 'SUB', 'sqnr_db': 2.1, ...}
        ```
        """
        import tensorflow as tf

        keep_float = self._check_nodes(keep_float)
        self._requantize(keep_float, variant)
        options = tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={"signal_power": _signal_power})
        with _quiet():
            measuring = tf.lite.experimental.QuantizationDebugger(
                quant_debug_model_content=self._debugger.quant_model,
                debug_dataset=_dataset(images), debug_options=options)
            measuring.run()
        table = io.StringIO()
        measuring.layer_statistics_dump(table)
        table.seek(0)
        names = layer_names(model)
        # Output tensors carry the signature's name; name them after the output layers.
        output_names = dict(zip(self._outputs, output_layer_names(model)))
        rows = []
        for stat in csv.DictReader(table):
            scale, mse = float(stat["scale"]), float(stat["mean_squared_error"])
            node = self._calibrated_name(stat["tensor_name"])
            rows.append(make_row(
                output_names.get(node) or keras_layer_name(node, names), stat["op_name"], node,
                sqnr_db=sqnr_db(float(stat["signal_power"]), mse),
                rmse_over_scale=math.sqrt(mse) / scale if scale > 0 else None,
                max_abs_error=float(stat["max_abs_error"]), mean_error=float(stat["mean_error"]),
            ))
        for node in keep_float:
            rows.append(make_row(output_names.get(node) or keras_layer_name(node, names),
                                 self._ops[node], node, kept_float=True))
        return sort_rows(rows)

    def quantize(self, keep_float=(), variant="minmax", keep_int16=()) -> bytes:
        """The deployable int8 `.tflite` bytes with the ops of `keep_float` left in float.

        Same calibration, quantizer and input/output types as `converter.convert()`;
        with no `keep_float`, the `"minmax"` variant and no range replaced
        (`widened_ranges` empty) it gives the same model. With `keep_int16` (int8
        converters), those ops get 16-bit activations: the LiteRT quantizer writes that
        file from the same calibrated model (`tflite_mixed.quantize_mixed`).

        Example:
        ```python
        model_bytes = quantizer.quantize(keep_float=["unet_1/unet_1/normalization_1/sub"])
        ```
        """
        from tensorflow.lite.python import convert

        keep_float = self._check_nodes(keep_float)
        converter = self.converter
        if self.activations_type == "int16":
            return self._quantize_16x8(keep_float, variant)
        if keep_int16:
            from keras_unet.export.quantization.tflite_mixed import quantize_mixed

            name = lambda dtype: "float32" if dtype is None else dtype.name  # noqa: E731
            return quantize_mixed(self.calibrated_for(variant, keep_float),
                                  self._check_nodes(keep_int16, "keep_int16"), keep_float,
                                  name(converter.inference_input_type))
        types = {}
        if converter.inference_input_type is not None:
            types["input_data_type"] = converter.inference_input_type
        if converter.inference_output_type is not None:
            types["output_data_type"] = converter.inference_output_type
        return convert.mlir_quantize(
            self.calibrated_for(variant, keep_float),
            disable_per_channel=converter._experimental_disable_per_channel,
            disable_per_channel_for_dense_layers=(
                converter._experimental_disable_per_channel_quantization_for_dense_layers),
            denylisted_nodes=list(keep_float) or None,
            **types,
        )


    def _quantize_16x8(self, keep_float, variant):
        from keras_unet.export.quantization.tflite_int16 import quantize_16x8

        if keep_float:
            raise ValueError("TFLite's 16x8 quantizer has no denylist: every op of a 16x8 file "
                             f"is quantized. Received: keep_float={list(keep_float)[:3]}")
        name = lambda dtype: "float32" if dtype is None else dtype.name  # noqa: E731
        return quantize_16x8(self.calibrated_for(variant),
                             name(self.converter.inference_input_type),
                             name(self.converter.inference_output_type),
                             allow_float=self._allow_float)


def tflite_layer_report(converter, images, keep_float=(), model=None) -> list:
    """Per-layer int8 error of what `converter` converts, on `images`, worst first.

    Args:
        converter: an int8 `tf.lite.TFLiteConverter` (see `TFLiteQuantizer`).
        images: verification images `(N, H, W, C)` in [0, 255].
        keep_float: `node` values of ops left in float.
        model: the Keras model (or its layer names), to name rows by Keras layer.

    Returns:
        list of row dicts, the columns of `keras_unet.export.quantization.report.COLUMNS`.

    Example:
    ```python
    from keras_unet.export.quantization import format_worst_layers, tflite_layer_report

    rows = tflite_layer_report(converter, images, model=model)
    print(format_worst_layers(rows))
    ```
    """
    return TFLiteQuantizer(converter).report(images, keep_float=keep_float, model=model)


def tflite_convert_keeping_float(converter, nodes) -> bytes:
    """Int8 `.tflite` bytes from `converter` with the ops of `nodes` left in float.

    Calibrates once per call; a loop that tries several denylists should keep one
    `TFLiteQuantizer` instead.

    Args:
        converter: an int8 `tf.lite.TFLiteConverter` (see `TFLiteQuantizer`).
        nodes: `node` values of report rows.

    Example:
    ```python
    model_bytes = tflite_convert_keeping_float(converter, [rows[0]["node"]])
    ```
    """
    return TFLiteQuantizer(converter).quantize(keep_float=nodes)
