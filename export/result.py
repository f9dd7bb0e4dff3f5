"""`ExportResult`: what an export wrote and how well it matched the Keras model.

Example:
```python
from keras_unet.export import export_tflite

result = export_tflite("model.keras", "model.tflite")
print(result.summary())
result.to_dict()["verification"]["max_abs_diff"]
```
"""

import dataclasses


@dataclasses.dataclass
class ExportResult:
    """The outcome of `export_tflite` / `export_onnx`.

    Args:
        path: the written file.
        format: `"tflite"` or `"onnx"`.
        quantization: `"none"`, `"fp16"`, `"dynamic"` or `"int8"`.
        size_bytes: size of the file.
        input_shape: `(batch, height, width, channels)`; None marks a dynamic dimension.
        input_dtype: dtype of the file's input tensor.
        output_dtype: dtype of the file's output tensor.
        verification: the `VerificationReport`, or None with `verify=False`.
        warnings: known traps met on the way (also issued as `UserWarning`).
        float_ops_left: compute ops a quantized file still runs in float, by op type.
        metadata: the metadata embedded in the file.
        timings_ms: latencies measured during export (dynamic-range check), if any.
    """

    path: str
    format: str
    quantization: str
    size_bytes: int
    input_shape: tuple
    input_dtype: str
    output_dtype: str
    verification: object = None
    warnings: list = dataclasses.field(default_factory=list)
    float_ops_left: dict = dataclasses.field(default_factory=dict)
    metadata: dict = dataclasses.field(default_factory=dict)
    timings_ms: dict = dataclasses.field(default_factory=dict)

    def summary(self):
        """A few lines for a terminal."""
        lines = [
            f"wrote {self.path} ({self.format}, quantize={self.quantization}, "
            f"{self.size_bytes / 1e6:.2f} MB, input {self.input_shape} {self.input_dtype}, "
            f"output {self.output_dtype})"
        ]
        if self.verification is not None:
            lines.append(self.verification.summary())
        else:
            lines.append("verification skipped")
        if self.float_ops_left:
            lines.append(f"ops left in float: {self.float_ops_left}")
        if self.timings_ms:
            lines.append("latency during export: " + ", ".join(
                f"{k}={v:.1f} ms" for k, v in self.timings_ms.items()))
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)

    def to_dict(self):
        data = dataclasses.asdict(self)
        if self.verification is not None:
            data["verification"] = self.verification.to_dict()
        return data
