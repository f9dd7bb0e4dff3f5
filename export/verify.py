"""Check an exported file against the Keras model it came from.

Every export runs the new file (through `keras_unet.runtime.load_runner`, the same code an
edge device uses) and the Keras model on the same real images and compares:

- `max_abs_diff`, `mean_abs_diff`: of the probabilities;
- `mask_agreement_iou`: IoU of the two thresholded masks (binary: foreground IoU over
  all pixels; multi-class: mean over the classes either mask contains). 1.0 when both
  masks are empty.

A float32 export must match within `atol` (1e-4); a quantized one must keep
`mask_agreement_iou >= agreement_floor` (0.95). Below that the export fails with the
numbers, rather than leaving a file that silently segments badly.

Example:
```python
from keras_unet.export.verify import compare_predictions

report = compare_predictions(keras_probs, tflite_probs, quantization="int8")
report.passed, report.mask_agreement_iou
```
"""

import dataclasses

import numpy as np

FP32_ATOL = 1e-4
DEFAULT_AGREEMENT_FLOOR = 0.95


class VerificationError(RuntimeError):
    """The exported file disagrees with the Keras model; `.report` holds the numbers."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


@dataclasses.dataclass
class VerificationReport:
    """Numbers from comparing an export with its Keras model on the same images.

    Args:
        max_abs_diff: largest absolute difference of the probabilities.
        mean_abs_diff: mean absolute difference of the probabilities.
        mask_agreement_iou: IoU of the thresholded masks of the two models.
        pixel_agreement: fraction of pixels given the same class.
        n_images: images compared.
        quantization: `"none"`, `"fp16"`, `"dynamic"` or `"int8"`.
        criterion: what had to hold, e.g. `"max_abs_diff <= 0.0001"`.
        passed: whether it held.
        source: where the images came from.
    """

    max_abs_diff: float
    mean_abs_diff: float
    mask_agreement_iou: float
    pixel_agreement: float
    n_images: int
    quantization: str
    criterion: str
    passed: bool
    source: str = ""

    def summary(self):
        """One line with the numbers, e.g. for the CLI."""
        status = "passed" if self.passed else "FAILED"
        return (
            f"verification {status} on {self.n_images} image(s){f' from {self.source}' if self.source else ''}: "
            f"max_abs_diff={self.max_abs_diff:.3g} mean_abs_diff={self.mean_abs_diff:.3g} "
            f"mask_agreement_iou={self.mask_agreement_iou:.4f} "
            f"pixel_agreement={self.pixel_agreement:.4f} (required: {self.criterion})"
        )

    def to_dict(self):
        return dataclasses.asdict(self)


def to_masks(probabilities, threshold=0.5):
    """Class-index masks `(N, H, W)` from probabilities `(N, H, W, K)`."""
    probabilities = np.asarray(probabilities)
    if probabilities.shape[-1] == 1:
        return (probabilities[..., 0] > threshold).astype("int32")
    return np.argmax(probabilities, axis=-1).astype("int32")


def mask_iou(reference, candidate, num_classes):
    """IoU of two class-index masks: foreground IoU for binary, else the mean over
    the classes present in either mask. Both masks empty counts as full agreement."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    classes = [1] if num_classes <= 2 else range(num_classes)
    ious = []
    for k in classes:
        a, b = reference == k, candidate == k
        union = np.logical_or(a, b).sum()
        if union:
            ious.append(np.logical_and(a, b).sum() / union)
    return float(np.mean(ious)) if ious else 1.0


def compare_predictions(reference, candidate, quantization="none", threshold=0.5,
                        agreement_floor=DEFAULT_AGREEMENT_FLOOR, atol=FP32_ATOL, source=""):
    """Compare two probability arrays `(N, H, W, K)` and judge them.

    Args:
        reference: Keras probabilities.
        candidate: probabilities of the exported file.
        quantization: `"none"` judges `max_abs_diff <= atol`; any other mode judges
            `mask_agreement_iou >= agreement_floor`.
        threshold: binary threshold of the masks.
        agreement_floor: the lowest acceptable mask IoU for a quantized export.
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
    num_classes = reference.shape[-1]
    ref_masks, cand_masks = to_masks(reference, threshold), to_masks(candidate, threshold)
    iou = mask_iou(ref_masks, cand_masks, max(num_classes, 2))
    max_diff = float(diff.max()) if diff.size else 0.0
    if quantization == "none":
        criterion = f"max_abs_diff <= {atol:g}"
        passed = max_diff <= atol
    else:
        criterion = f"mask_agreement_iou >= {agreement_floor:g}"
        passed = iou >= agreement_floor
    return VerificationReport(
        max_abs_diff=max_diff,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        mask_agreement_iou=iou,
        pixel_agreement=float((ref_masks == cand_masks).mean()),
        n_images=int(reference.shape[0]),
        quantization=quantization,
        criterion=criterion,
        passed=bool(passed),
        source=source,
    )


def keras_predict(model, images, batch_size=8):
    """Probabilities of a Keras model, float32, in inference mode."""
    static_batch = model.inputs[0].shape[0] if getattr(model, "inputs", None) else None
    batch_size = static_batch or batch_size
    outputs = [
        np.asarray(model(images[i:i + batch_size], training=False), dtype="float32")
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs)


def verify_export(model, path, images, quantization, threshold=0.5,
                  agreement_floor=DEFAULT_AGREEMENT_FLOOR, atol=FP32_ATOL, source="",
                  raise_on_failure=True, reference=None):
    """Run `path` and `model` on `images`, compare, and raise if the export fails.

    Args:
        model: the Keras model (at the exported input size).
        path: the exported `.tflite` or `.onnx` file.
        images: `(N, H, W, C)` images in [0, 255] at the exported input size.
        quantization: quantization of the export (decides the criterion).
        threshold: binary threshold.
        agreement_floor: lowest mask IoU accepted for quantized exports.
        atol: largest difference accepted for float32 exports.
        source: where the images came from.
        raise_on_failure: raise `VerificationError` when the criterion fails.
        reference: precomputed Keras probabilities for `images` (else computed here).

    Example:
    ```python
    report = verify_export(model, "model.tflite", images, "int8")
    ```
    """
    from keras_unet.runtime import load_runner

    if reference is None:
        reference = keras_predict(model, images)
    runner = load_runner(str(path))
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
                               limit=16, progress=True):
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
