"""The export job: the source model loaded, its input fixed, its calibration images read.

`open_job` produces an `ExportJob` that lives in a temporary work folder. Converters may be
called several times on one job: the intermediates (the SavedModel, the float ONNX graph)
and the Keras reference probabilities are cached on it.

Example:
```python
from keras_unet.export.job import open_job
from keras_unet.export.options import ExportOptions

with open_job("model.keras", ExportOptions()) as job:
    job.static.inputs[0].shape  # (1, 128, 128, 3)
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from keras_unet.export.options import STATIC_MODES, VERIFICATION_SIZE, ExportOptions


@dataclasses.dataclass
class ExportJob:
    """A loaded source model with everything the converters and the checks share.

    Args:
        model: the source `keras.Model`.
        source: its name in messages and metadata (the file name, or the model name).
        facts: `num_classes`, `output_activation`, `channels` (`source.model_facts`).
        size: `(height, width)` that calibration and verification run at.
        export_size: `(height, width)` of the file, `(None, None)` for any size.
        batch: the file's batch size, None for a free batch.
        static: the copy of `model` with a fixed input (shares the weights).
        calibration: float32 `(N, H, W, C)` images in [0, 255], or None.
        work: a temporary folder that lives as long as the job.
        verification_data: images to verify on, or None (see `verification_images`).
        verification_size: at most this many verification images.
        progress: show progress bars.
        verification_masks: mask paths of the verification images (held out from a
            labelled calibration folder), or None.
        verification_source: how the verification images were chosen, for reports.
        threshold: the binary threshold masks are compared at.
        input_channels: channels of the file's input (`static`'s); differs from
            `facts["channels"]` when the file converts RGB to gray inside.
        quantize_aware: an int8 job of a quantize-aware model: its learned ranges replace
            calibration (`Converter.session` picks the QAT session).
        join_scales: the equalized skip connections of an int8 job
            (`decoder_form.skip_equalization`), which `static` and the ONNX graph compute;
            empty for other jobs.

    Example:
    ```python
    with open_job(model, ExportOptions(quantize="int8", calibration_data="data/val")) as job:
        images, source = job.verification_images()
        probabilities = job.reference()  # Keras, computed once
    ```
    """

    model: object
    source: str
    facts: dict
    size: tuple
    export_size: tuple
    batch: Optional[int]
    static: object
    calibration: object
    work: Path
    verification_data: object = None
    verification_size: Optional[int] = VERIFICATION_SIZE
    progress: bool = True
    verification_masks: object = None
    verification_source: Optional[str] = None
    threshold: float = 0.5
    input_channels: Optional[int] = None
    quantize_aware: bool = False
    join_scales: dict = dataclasses.field(default_factory=dict)
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)
    _counter: Iterator[int] = dataclasses.field(default_factory=itertools.count, repr=False)

    def __post_init__(self) -> None:
        if self.input_channels is None:
            self.input_channels = self.facts["channels"]

    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """`build()` once per job and `key`; later calls return the same value."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def new_path(self, stem: str, suffix: str) -> Path:
        """A fresh file name in the work folder (`stem_3.onnx`), never used before."""
        return self.work / f"{stem}_{next(self._counter)}{suffix}"

    def verification_images(self) -> tuple:
        """`(images, source)` to verify on, chosen once (see `select_verification_images`)."""
        from keras_unet.export.verify import select_verification_images

        def choose():
            images, source = select_verification_images(
                self.size, self.input_channels, self.verification_data, self.calibration,
                self.verification_size, self.progress)
            return images, self.verification_source or source

        return self.cached("verification_images", choose)

    def reference(self) -> Any:
        """Keras probabilities on `verification_images()`, computed once.

        A model that outputs logits (`output_activation` None) gets the activation the
        runners apply (sigmoid for one class, softmax for more), so the two compare.
        """
        from keras_unet.export.verify import keras_predict

        images, _ = self.verification_images()
        logits = self.facts["output_activation"] is None
        return self.cached("reference", functools.partial(keras_predict, self.static, images,
                                                         logits=logits))


@contextlib.contextmanager
def open_job(model_or_path: Any, options: ExportOptions) -> Iterator[ExportJob]:
    """Load the model, fix its input and read the calibration images; yield an `ExportJob`.

    Args:
        model_or_path: a `keras.Model` or the path of a `.keras` file.
        options: the export's `ExportOptions`. Read here: `quantize` (`"int8"` and
            `"int16x8"` read
            `calibration_data`, at most `calibration_size` images), `input_size`,
            `dynamic_size` (the file keeps a free height and width, verified at
            `input_size`, the model's own size, or 128x128), `batch`, `verification_data`
            (default for int8: images held out from `calibration_data`,
            `keras_unet.export.holdout`; otherwise the nuclei sample shipped with
            keras_unet), `verification_size` (for int8 at least this many are held out
            where the set has twice that many, and so are the images beyond
            `calibration_size`, up to half the set), `progress` and `input_channels` (3 for
            a 1-channel model converts RGB to gray inside the static copy).

    Example:
    ```python
    with open_job("model.keras", ExportOptions()) as job:
        job.static.inputs[0].shape  # (1, 128, 128, 3)
    ```
    """
    from keras_unet.export.calibration import load_images, require_calibration
    from keras_unet.export.source import (
        DEFAULT_VERIFY_SIZE,
        check_runs_at,
        file_input_channels,
        load_source_model,
        model_facts,
        resolve_input_size,
        static_model,
    )

    quantize = options.quantize
    calibration_data = options.calibration_data
    verification_data = options.verification_data
    verification_size: Optional[int] = options.verification_size
    if quantize in STATIC_MODES:
        require_calibration(calibration_data, quantize, "api")
    model, source = load_source_model(model_or_path)
    quantize_aware = is_quantize_aware(model)
    if quantize != "int8" and quantize_aware:
        # The float graph of a QAT model, without its fake-quant ops (weights on the grid).
        from keras_unet.quantization import float_copy

        model = float_copy(model)
        quantize_aware = False
    size = resolve_input_size(model, options.input_size, source, required=not options.dynamic_size)
    facts = model_facts(model)
    if quantize_aware and options.input_channels not in (None, facts.get("channels")):
        # The RGB -> gray step would be a float layer in front of the learned ranges.
        raise ValueError("A quantize-aware model is exported as it was trained: "
                         "`input_channels` is not available for it; train the QAT "
                         "model on the channels the device gives. "
                         f"Received: input_channels={options.input_channels!r}")
    export_size = (None, None) if options.dynamic_size else size
    if size == (None, None):
        size = DEFAULT_VERIFY_SIZE
    channels = file_input_channels(model, options.input_channels)
    # One real call of the model: a bad size fails here, before the images load.
    checked_run = check_runs_at(model, size, options.batch)
    calibration, masks, verification_source = None, None, None
    if quantize in STATIC_MODES:
        if verification_data is None:
            from keras_unet.export.holdout import split_calibration

            split = split_calibration(calibration_data, held_out=options.verification_size,
                                      calibration_size=options.calibration_size)
            calibration_data, verification_data = split.calibration, split.verification
            masks, verification_source = split.masks, split.description
            if verification_data is not None:
                verification_size = None  # the held-out images, all of them, in order
        calibration = load_images(calibration_data, size, channels, options.calibration_size,
                                  progress=options.progress)
    join_scales = {}
    if quantize == "int8" and not quantize_aware and calibration is not None:
        # 8-bit activations only: an int16x8 file is bounded by its weights, which the
        # factors coarsen in the convolution after each join.
        join_scales = _equalized_joins(model, calibration)
    # Full-integer TFLite wants each skip connection's own int8 scale (decoder_form); ONNX
    # converts its own graph (onnx_convert.float_model) and the float modes gain nothing from it.
    static = static_model(model, size, batch_size=options.batch,
                          input_channels=options.input_channels,
                          separate_skip_scales=quantize in STATIC_MODES, join_scales=join_scales,
                          checked_run=checked_run)
    with tempfile.TemporaryDirectory(prefix="keras_unet_export_") as work:
        yield ExportJob(
            model=model, source=source, facts=facts, size=size, export_size=export_size,
            batch=options.batch, static=static, calibration=calibration, work=Path(work),
            verification_data=verification_data, verification_size=verification_size,
            progress=options.progress, verification_masks=masks,
            verification_source=verification_source, input_channels=channels,
            quantize_aware=quantize_aware, join_scales=join_scales,
        )


def _equalized_joins(model: Any, calibration: Any) -> dict:
    """`decoder_form.skip_equalization` of `model` on the calibration images, RGB ones
    turned gray for a 1-channel model as the file does."""
    from keras_unet.export.decoder_form import skip_equalization
    from keras_unet.export.source import rgb_to_gray_layer
    from keras_unet.runtime.describe import model_input_shape

    images = calibration
    if images.shape[-1] != model_input_shape(model)[2]:
        images = np.asarray(rgb_to_gray_layer()(images))
    return skip_equalization(model, images)


def is_quantize_aware(model: Any) -> bool:
    """Whether `model` is a quantize-aware copy (`keras_unet.quantization.quantize_aware`)."""
    from keras_unet.quantization import is_quantize_aware as check

    return bool(check(model))
