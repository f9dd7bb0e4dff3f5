"""The int8 sessions of an ONNX export (`keras_unet.export.int8_session`).

`ONNXSession` quantizes the job's prepared float graph with each calibration method (our
Percentile ranges first, then MinMax and onnxruntime's Entropy), keeps ops in float through
`nodes_to_exclude` or at int16 activations (`keep_int16`), and with
`activation_type="auto"` picks the activation type; with `quantize="int16x8"` every
activation is int16. `ONNXQATSession` writes a quantize-aware model from its learned ranges.

Example:
```python
from keras_unet.export.onnx import CONVERTER, ONNXOptions

session = CONVERTER.session(job, ONNXOptions(quantize="int8"))
model_bytes = session.quantize([], session.variants[0])
```
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Optional

from keras_unet.export.converter import apply_rewrites
from keras_unet.export.int8_session import Int8Session, QATSession
from keras_unet.export.onnx_calibration import entropy_fits
from keras_unet.export.onnx_convert import (ACTIVATION_TYPES, CALIBRATE_METHODS, HEAVY_OPS,
                                            INPUT_NAME, ONNXOptions, float_ops_left,
                                            prepared_model, quantize_int8, time_ms)


class ONNXSession(Int8Session):
    """The int8 session of one job after training (`keras_unet.export.int8_session`).

    Each calibration method is a variant (our Percentile ranges first, then MinMax and
    onnxruntime's Entropy); ops are kept in float through `nodes_to_exclude`, or at int16
    activations with int8 weights (`keep_int16`, in files with uint8 activations:
    `can_keep_int16`), each with the activation onnxruntime would fuse it with
    (`onnx_nodes_to_exclude`). For `quantize="int16x8"` every activation
    is int16 (`keep_int16` does not apply, the activation type is not timed); for
    `integer_only` nothing may be kept in float.

    Example:
    ```python
    session = ONNXSession(job, ONNXOptions(quantize="int8"), ONNX_REWRITES)
    model_bytes = session.quantize([], "minmax")
    ```
    """

    can_keep_int16 = True  # per session: False with int8 activations (see __init__)
    can_correct_biases = True
    can_round_weights = True

    def __init__(self, job: Any, options: ONNXOptions, rewrites: tuple = ()) -> None:
        super().__init__(job, options, rewrites)
        if options.quantize == "int16x8":
            self.metadata.update(activation_type="int16")
        elif options.activation_type == "auto":
            options = self._fastest_activation_type(options)
        self.options = options
        # onnxruntime 1.32 refuses some opset-21 files (what 16-bit Q/DQ needs) with int8
        # activations: its QDQ propagation writes a QuantizeLinear after a float op reading
        # a dequantized tensor (a Slice) with an INT8 output_dtype and a UINT8 zero point.
        # uint8 and int16x8 files load. Why: see docs/notes/2026-12-06-onnx-int16x8.md.
        self.can_keep_int16 = options.quantize == "int8" and options.activation_type != "int8"
        first = options.calibrate_method
        self._variants = (first,) + tuple(m for m in CALIBRATE_METHODS if m != first)
        self._entropy_checked = False

    @property
    def variants(self) -> tuple:
        """The calibrations to try; Entropy (not first) left out when it would not fit in
        memory: onnxruntime's Entropy calibrator holds every image's tensors at once (a
        seed-size U-Net's 100 images: more than this machine has), while the other two read
        our ranges, sampled one image at a time (`keras_unet.export.onnx_calibration`)."""
        if not self._entropy_checked and "entropy" in self._variants[1:]:
            self._entropy_checked = True
            if not entropy_fits(self.job, prepared_model(self.job, self.options.opset),
                                self.options.opset, INPUT_NAME):
                self._variants = tuple(v for v in self._variants if v != "entropy")
                warnings.warn("The Entropy calibration was left out: onnxruntime holds every "
                              "calibration image's activations in memory for it, more than a "
                              "quarter of this machine's; the percentile and minmax ranges "
                              "were tried.", UserWarning, stacklevel=2)
        return self._variants

    def _fastest_activation_type(self, options: ONNXOptions) -> ONNXOptions:
        """Quantize with uint8 and with int8 activations, keep the faster on this machine.

        Only the candidates with the fewest compute ops left in float compete on time: a
        few timed runs on a busy machine once picked int8 activations, with which
        onnxruntime 1.32 runs the 1x1 convolutions before DepthToSpace in float.
        """
        timings, float_ops = {}, {}
        for kind in ACTIVATION_TYPES:
            candidate = dataclasses.replace(options, activation_type=kind)
            model_bytes = self.job.cached(("onnx_int8", kind, options.calibrate_method, ()),
                                          functools.partial(self._rewritten, candidate))
            path = self.job.new_path(f"activations_{kind}", ".onnx")
            path.write_bytes(model_bytes)
            float_ops[kind] = sum(float_ops_left(path, self.job.work).values())
            timings[kind] = time_ms(model_bytes, threads=options.threads, size=self.job.size)
        fewest = min(float_ops.values())
        chosen = min((kind for kind in timings if float_ops[kind] == fewest),
                     key=timings.__getitem__)
        self.metadata = {
            "activation_type": chosen,
            "activation_type_ms": {kind: round(ms, 3) for kind, ms in timings.items()},
            "activation_type_float_ops": float_ops}
        return dataclasses.replace(options, activation_type=chosen)

    def _rewritten(self, options: ONNXOptions) -> bytes:
        return apply_rewrites(self.rewrites, quantize_int8(self.job, options), "int8")

    def time_ms(self, model_bytes: bytes) -> Optional[float]:
        """Latency of `model_bytes` here (onnxruntime, the export's threads)."""
        return time_ms(model_bytes, threads=self.options.threads, size=self.job.size)

    def _options(self, keep_float: list, variant: str, keep_int16: tuple = ()) -> ONNXOptions:
        from keras_unet.export.quantization import onnx_nodes_to_exclude

        if keep_float and self.options.integer_only:
            raise ValueError("An integer-only file keeps no op in float (keep ops at int16 "
                             f"instead). Received: keep_float={list(keep_float)[:3]}")
        if keep_int16 and self.options.quantize == "int8" and not self.can_keep_int16:
            raise ValueError("Ops are kept at int16 in int8 files with uint8 activations only "
                             "(onnxruntime cannot load some int8-activation files with int16 "
                             f"ops). Received: activation_type='int8', keep_int16={list(keep_int16)[:3]}")
        prepared = prepared_model(self.job, self.options.opset)
        exclude = tuple(onnx_nodes_to_exclude(prepared, list(keep_float))) if keep_float else ()
        # In an int16x8 file every op is int16 already.
        wide = tuple(keep_int16) if self.options.quantize == "int8" else ()
        return dataclasses.replace(self.options, calibrate_method=variant,
                                   nodes_to_exclude=tuple(self.options.nodes_to_exclude) + exclude,
                                   keep_int16=tuple(self.options.keep_int16) + wide)

    def _graph(self) -> Any:
        import onnx

        return self.job.cached(("onnx_prepared_graph", self.options.opset), lambda: onnx.load(
            str(prepared_model(self.job, self.options.opset)), load_external_data=False).graph)

    def expand(self, nodes: list) -> list:
        """The graph nodes among `nodes` (not graph inputs) and the nodes reading their
        outputs: a float op still hands its consumer a tensor quantized at its range."""
        graph = self._graph()
        by_output = {out: node.name for node in graph.node for out in node.output}
        names = {node.name for node in graph.node}
        kept = [node for node in nodes if node in names]
        readers = [node.name for node in graph.node
                   if any(by_output.get(name) in kept for name in node.input)]
        return list(dict.fromkeys(kept + readers))

    def leading_nodes(self) -> list:
        """The stem's nodes (`report.leading_nodes`); nodes that read only weights (a
        kernel's Transpose) are not activations and are left out."""
        from keras_unet.export.quantization import leading_nodes

        return leading_nodes(self._activation_ops(), HEAVY_OPS)

    def trailing_nodes(self) -> list:
        """The head's nodes (`report.trailing_nodes`), weights-only nodes left out."""
        from keras_unet.export.quantization import trailing_nodes

        return trailing_nodes(self._activation_ops(), HEAVY_OPS)

    def _activation_ops(self) -> list:
        """`(name, op type, inputs, outputs)` of the nodes that read an activation."""
        graph = self._graph()
        weights = {init.name for init in graph.initializer}
        return [(node.name, node.op_type, list(node.input), list(node.output))
                for node in graph.node
                if any(name and name not in weights for name in node.input)]

    def convert(self, keep_float: list, variant: str, keep_int16: tuple = ()) -> bytes:
        return quantize_int8(self.job, self._options(keep_float, variant, keep_int16))

    def quantize(self, keep_float: list, variant: str, keep_int16: tuple = ()) -> bytes:
        """`Int8Session.quantize`, once per job, activation type, variant and kept ops."""
        if self.options.quantize == "int16x8":
            return self.job.cached(("onnx_int16x8", variant, tuple(keep_float)), functools.partial(
                super().quantize, keep_float, variant))
        # The all-int8 key is the one `_fastest_activation_type` caches under.
        key: tuple = ("onnx_int8", self.options.activation_type, variant, tuple(keep_float))
        key += (tuple(keep_int16),) if keep_int16 else ()
        return self.job.cached(key, functools.partial(super().quantize, keep_float, variant,
                                                      tuple(keep_int16)))

    def report(self, images: Any, keep_float: list, variant: str) -> Optional[list]:
        from keras_unet.export.quantization import onnx_layer_report

        quantized = self.job.new_path("report", ".onnx")
        quantized.write_bytes(self.quantize(keep_float, variant))
        batch = 1 if self.job.batch else 8
        try:
            return onnx_layer_report(prepared_model(self.job, self.options.opset), quantized,
                                     images, input_name=INPUT_NAME, keep_float=keep_float,
                                     model=self.job.model, batch_size=batch)
        except ValueError:
            # Nothing quantized left to measure (every op kept in float); the int8 step
            # reads None as "nothing to measure".
            return None


class ONNXQATSession(QATSession):
    """The int8 session of a quantize-aware model: `keras_unet.export.qat.converted_qat_onnx`
    (activations uint8 unless `activation_type="int8"`, recorded in the metadata).

    Example:
    ```python
    ONNXQATSession(job, ONNXOptions(quantize="int8"), ONNX_REWRITES).quantize([], "qat")
    ```
    """

    def convert_qat(self) -> bytes:
        from keras_unet.export.qat import converted_qat_onnx

        activation = self.options.activation_type
        activation = "uint8" if activation == "auto" else activation
        self.metadata = {"activation_type": activation}
        return converted_qat_onnx(self.job.model, input_size=self.job.size,
                                  opset=self.options.opset, activation_type=activation)


