"""Check an exported file against the Keras model it came from.

Every export runs the new file (through `keras_unet.runtime.load_runner`, the same code an
edge device uses) and the Keras model on the same real images and compares:

- `max_abs_diff`, `mean_abs_diff`: of the probabilities;
- the masks of both, thresholded with the rule `predict` uses (`p >= threshold` for a
  binary model, arg-max otherwise: `keras_unet.runtime.scores.probabilities_to_masks`),
  scored by `keras_unet.runtime.scores.mask_agreement` with Keras as the reference:
  `pixel_agreement`, `agreement_iou` (binary: foreground IoU; multi-class: IoU weighted by
  each class's share of the Keras pixels) and `agreement_mean_iou` (plain mean over the
  classes either model predicts; reported, not gated on). Both masks empty is full
  agreement (1.0).

A float32 export must match within `atol` (1e-4); a quantized one must keep
`agreement_iou >= agreement_floor` (0.95). Below that the export fails with the numbers,
rather than leaving a file that silently segments badly. The benchmark reports the same
`agreement_iou`.

Example:
```python
from keras_unet.export.verify import compare_predictions

report = compare_predictions(keras_probs, tflite_probs, quantization="int8")
report.passed, report.agreement_iou
```
"""

import dataclasses
from typing import Any

import numpy as np

from keras_unet.export.options import DEFAULT_AGREEMENT_FLOOR
from keras_unet.runtime.scores import (agreement_standard_error, mask_agreement,
                                       probabilities_to_masks)

FP32_ATOL = 1e-4


class VerificationError(RuntimeError):
    """The exported file disagrees with the Keras model; `.report` holds the numbers, and
    `.outcome` the int8 step's `Int8Outcome` (best attempt, its layer report) when it refused.

    Example:
    ```python
    import keras_unet
    from keras_unet.datasets import nuclei_path
    from keras_unet.export import VerificationError, export_tflite

    model = keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2)   # untrained
    try:
        export_tflite(model, "unet_int8.tflite", quantize="int8", calibration_data=nuclei_path(),
                      calibration_size=16, verification_size=8, agreement_floor=1.0,
                      repair=False, check_speed=False, progress=False)
    except VerificationError as error:   # nothing was written
        print(error)
        error.report.agreement_iou
    ```
    """

    def __init__(self, message: str, report: Any = None, outcome: Any = None) -> None:
        super().__init__(message)
        self.report = report
        self.outcome = outcome


@dataclasses.dataclass
class VerificationReport:
    """Numbers from comparing an export with its Keras model on the same images.

    Args:
        max_abs_diff: largest absolute difference of the probabilities.
        mean_abs_diff: mean absolute difference of the probabilities.
        pixel_agreement: fraction of pixels given the same class.
        agreement_iou: the gated figure: foreground IoU of the two models' masks (binary)
            or frequency-weighted IoU (multi-class), Keras as the reference.
        agreement_mean_iou: mean per-class IoU of the two models' masks.
        n_images: images compared.
        quantization: `"none"`, `"fp16"`, `"dynamic"` or `"int8"`.
        criterion: what had to hold, e.g. `"max_abs_diff <= 0.0001"`.
        passed: whether it held.
        source: where the images came from.
        agreement_se: quantized files: bootstrap standard error of `agreement_iou` over
            the images (`keras_unet.runtime.scores.agreement_standard_error`), how far the
            figure could move on other images of the same kind; 0 for float32.

    Example:
    ```python
    report = compare_predictions(probs, probs)
    report.to_dict()["agreement_iou"]  # 1.0
    ```
    """

    max_abs_diff: float
    mean_abs_diff: float
    pixel_agreement: float
    agreement_iou: float
    agreement_mean_iou: float
    n_images: int
    quantization: str
    criterion: str
    passed: bool
    source: str = ""
    agreement_se: float = 0.0

    def summary(self) -> str:
        """One line with the numbers, e.g. for the CLI."""
        status = "passed" if self.passed else "FAILED"
        origin = f" from {self.source}" if self.source else ""
        se = f" (SE {self.agreement_se:.4f})" if self.agreement_se else ""
        return (
            f"verification {status} on {self.n_images} image(s){origin}: "
            f"max_abs_diff={self.max_abs_diff:.3g} mean_abs_diff={self.mean_abs_diff:.3g} "
            f"agreement_iou={self.agreement_iou:.4f}{se} "
            f"agreement_mean_iou={self.agreement_mean_iou:.4f} "
            f"pixel_agreement={self.pixel_agreement:.4f} (required: {self.criterion})"
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def compare_predictions(reference, candidate, quantization="none", threshold=0.5,
                        agreement_floor=DEFAULT_AGREEMENT_FLOOR, atol=FP32_ATOL, source="") -> VerificationReport:
    """Compare two probability arrays `(N, H, W, K)` and judge them.

    Args:
        reference: Keras probabilities.
        candidate: probabilities of the exported file.
        quantization: `"none"` judges `max_abs_diff <= atol`; any other mode judges
            `agreement_iou >= agreement_floor`.
        threshold: binary threshold of the masks (a pixel is foreground when
            `p >= threshold`).
        agreement_floor: the lowest acceptable `agreement_iou` for a quantized export.
        atol: the largest acceptable difference for a float32 export.
        source: where the images came from (for the report).

    Example:
    ```python
    compare_predictions(a, a + 1e-6).passed  # True
    ```
    """
    reference = np.asarray(reference, dtype="float32")
    candidate = np.asarray(candidate, dtype="float32")
    if reference.shape != candidate.shape:
        raise ValueError(
            "The exported file returned a different shape than the Keras model. "
            f"Received: keras {reference.shape}, export {candidate.shape}"
        )
    diff = np.abs(reference - candidate)
    masks = probabilities_to_masks(candidate, threshold)
    reference_masks = probabilities_to_masks(reference, threshold)
    num_classes = int(reference.shape[-1])
    agreement = mask_agreement(masks, reference_masks, num_classes=num_classes)
    max_diff = float(diff.max()) if diff.size else 0.0
    if quantization == "none":
        criterion = f"max_abs_diff <= {atol:g}"
        passed = max_diff <= atol
        standard_error = 0.0
    else:
        criterion = f"agreement_iou >= {agreement_floor:g}"
        passed = agreement["agreement_iou"] >= agreement_floor
        standard_error = agreement_standard_error(masks, reference_masks, num_classes)
    return VerificationReport(
        max_abs_diff=max_diff,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        pixel_agreement=agreement["pixel_agreement"],
        agreement_iou=agreement["agreement_iou"],
        agreement_mean_iou=agreement["agreement_mean_iou"],
        n_images=int(reference.shape[0]),
        quantization=quantization,
        criterion=criterion,
        passed=bool(passed),
        source=source,
        agreement_se=standard_error,
    )


def _graph_forward(model):
    """`model(batch, training=False)` traced once into a TensorFlow graph.

    The export's static-batch model takes one image per call, and a functional U-Net called
    eagerly spends most of each call dispatching its layers one by one: on 32 verification
    images of a tiny model that was a third of an int8 export's time. The traced graph gives
    the same probabilities (within 2e-6; grappler fuses conv + bias). Other backends (the
    export needs TensorFlow, but `verify_export` takes any model) call the model as it is.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return lambda batch: model(batch, training=False)
    import tensorflow as tf

    return tf.function(lambda batch: model(batch, training=False), reduce_retracing=True,
                       autograph=False)


def keras_predict(model, images, batch_size=8, logits=False) -> np.ndarray:
    """Probabilities of a Keras model, float32, in inference mode.

    Args:
        model: the Keras model.
        images: `(N, H, W, C)` in [0, 255].
        batch_size: images per call (a static batch of the model wins).
        logits: the model outputs logits (`output_activation=None`): apply the activation
            the runners apply to such a file (`keras_unet.runtime.tensors.activate`:
            sigmoid for one class, softmax for more), so both sides are probabilities.

    Example:
    ```python
    probs = keras_predict(model, images)  # (N, H, W, K)
    ```
    """
    static_batch = model.inputs[0].shape[0] if getattr(model, "inputs", None) else None
    batch_size = static_batch or batch_size
    forward = _graph_forward(model)
    outputs = np.concatenate([
        np.asarray(forward(images[i:i + batch_size]), dtype="float32")
        for i in range(0, len(images), batch_size)
    ])
    if logits:
        from keras_unet.runtime.tensors import activate

        outputs = activate(outputs).astype("float32")
    return outputs


def verify_export(model, path, images, quantization, threshold=0.5,
                  agreement_floor=DEFAULT_AGREEMENT_FLOOR, atol=FP32_ATOL, source="",
                  raise_on_failure=True, reference=None) -> VerificationReport:
    """Run `path` and `model` on `images`, compare, and raise if the export fails.

    Args:
        model: the Keras model (at the exported input size).
        path: the exported `.tflite` or `.onnx` file.
        images: `(N, H, W, C)` images in [0, 255] at the exported input size.
        quantization: quantization of the export (decides the criterion).
        threshold: binary threshold.
        agreement_floor: lowest `agreement_iou` accepted for quantized exports.
        atol: largest difference accepted for float32 exports.
        source: where the images came from.
        raise_on_failure: raise `VerificationError` when the criterion fails.
        reference: precomputed Keras probabilities for `images` (else computed here,
            with the activation applied when the file's metadata says the model outputs
            logits, as the runner does).

    Example:
    ```python
    import keras_unet
    from keras_unet.datasets import nuclei_path
    from keras_unet.export import export_tflite, verify_export
    from keras_unet.runtime import imageio

    model = keras_unet.UNet(input_shape=(32, 32, 3), filters=4, depth=2)
    export_tflite(model, "unet.tflite", verify=False, progress=False)
    images, _ = imageio.load_dataset_arrays(nuclei_path(), size=(32, 32), channels=3)
    report = verify_export(model, "unet.tflite", images[:8], "none")
    report.passed, report.max_abs_diff   # (True, ~1e-6)
    ```
    """
    import warnings

    from keras_unet.runtime import load_runner

    with warnings.catch_warnings():
        # Said about the export's own intermediate files (a candidate before its metadata is
        # embedded; a batch-1 graph run image by image): not news for the user.
        warnings.filterwarnings("ignore", message=".*no keras_unet metadata in this file")
        warnings.filterwarnings("ignore", message=".*this graph cannot take a batch")
        runner = load_runner(str(path))
        if reference is None:
            reference = keras_predict(model, images, logits=runner.output_activation is None)
        candidate = np.asarray(runner.predict(images), dtype="float32")
    report = compare_predictions(
        reference, candidate, quantization, threshold, agreement_floor, atol, source
    )
    if raise_on_failure and not report.passed:
        raise VerificationError(
            f"The exported file does not match the Keras model, so it was not written. "
            f"{report.summary()}. "
            + (
                "Calibrate on more representative images, try another quantization mode, "
                "or lower the floor with agreement_floor / --agreement-floor if this "
                "loss is acceptable."
                if quantization != "none"
                else "A float32 export should match to rounding error; please report this."
            ),
            report,
        )
    return report


def select_verification_images(size, channels, verification_data=None, calibration_images=None,
                               limit=16, progress=True) -> tuple:
    """Images to verify on, and where they came from.

    Order: `verification_data` if given; else the calibration images; else the nuclei
    sample shipped with keras_unet (real microscopy images, converted to `channels`).

    Args:
        size: `(height, width)` of the export.
        channels: channels of the model input.
        verification_data: folder, list of paths or array, or None.
        calibration_images: the array already used for calibration, or None.
        limit: at most this many images.
        progress: show a progress bar while reading files.

    Example:
    ```python
    images, source = select_verification_images((128, 128), 3)
    ```
    """
    from keras_unet.export.calibration import load_images, shipped_sample_dir

    if verification_data is not None:
        images = load_images(verification_data, size, channels, limit, seed=1,
                             name="verification_data", progress=progress)
        source = str(verification_data) if not isinstance(verification_data, np.ndarray) else "array"
        return images, source
    if calibration_images is not None:
        return calibration_images[:limit], "calibration images"
    sample = shipped_sample_dir()
    if sample is None:
        raise ValueError(
            "No images to verify the export on: pass verification_data (or "
            "calibration_data), or verify=False. Received: verification_data=None"
        )
    images = load_images(sample, size, channels, limit, name="verification_data", progress=progress)
    return images, "keras_unet shipped nuclei sample"


def verify_bytes(job, converter, model_bytes, quantization, threshold=0.5,
                 agreement_floor=DEFAULT_AGREEMENT_FLOOR, raise_on_failure=True) -> VerificationReport:
    """Run `model_bytes` in its runtime against the job's Keras reference.

    Args:
        job: the pipeline's `ExportJob` (its verification images and Keras reference).
        converter: the format's `Converter` (its suffix names the file the runtime loads).
        model_bytes: the file to check.
        quantization: its quantization mode (decides the criterion).
        threshold: binary threshold of the masks.
        agreement_floor: lowest `agreement_iou` accepted for a quantized file.
        raise_on_failure: raise `VerificationError` when the criterion fails.

    Returns:
        the `VerificationReport`.

    Example:
    ```python
    report = verify_bytes(job, CONVERTER, model_bytes, "int8", raise_on_failure=False)
    report.agreement_iou
    ```
    """
    images, source = job.verification_images()
    path = job.new_path("candidate", converter.suffix)
    path.write_bytes(model_bytes)
    try:
        return verify_export(job.static, path, images, quantization, threshold=threshold,
                             agreement_floor=agreement_floor, source=source,
                             raise_on_failure=raise_on_failure, reference=job.reference())
    finally:
        path.unlink()
