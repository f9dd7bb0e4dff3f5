"""Stamp a converted file with its metadata: build it from the job and the file, embed it.

`Stamper(job, converter, quantize)` is called with a file's bytes (and, for int8, its
`"int8"` metadata section) and returns a `StampedFile`: the bytes with the metadata inside,
what the file's tensors are (`Converter.describe`) and the metadata itself. The pipeline and
the int8 step verify and write stamped files, so the file verified is the file written.

Example:
```python
stamp = Stamper(job, CONVERTER, "none")
stamped = stamp(CONVERTER.convert(job, options))
stamped.metadata["num_classes"]
```
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional


@dataclasses.dataclass(frozen=True)
class StampedFile:
    """A file with its metadata embedded.

    Args:
        model_bytes: the file, metadata inside.
        info: what its tensors are (`Converter.describe`).
        metadata: the metadata embedded (`keras_unet.runtime.metadata_schema`).
    """

    model_bytes: bytes
    info: dict
    metadata: dict


class Stamper:
    """Builds and embeds the metadata of one job's files for one format and mode.

    Args:
        job: the pipeline's `ExportJob`.
        converter: the format's `Converter`.
        quantize: the quantization mode.
        integer_only: the file was written integer-only (recorded in its metadata).
    """

    def __init__(self, job: Any, converter: Any, quantize: str, integer_only: bool = False) -> None:
        self.job = job
        self.converter = converter
        self.quantize = quantize
        self.integer_only = integer_only

    def __call__(self, model_bytes: bytes, int8: Optional[dict] = None) -> StampedFile:
        """`model_bytes` with its metadata; `int8`: the file's `"int8"` section, or None."""
        from keras_unet.export.metadata import build_metadata

        info = self.converter.describe(model_bytes)
        job = self.job
        metadata = build_metadata(
            job.model, format=self.converter.format, quantization=self.quantize,
            input_size=job.export_size, input_dtype=info["input_dtype"],
            input_quantization=info["input_quantization"], output_dtype=info["output_dtype"],
            output_quantization=info["output_quantization"], source_model=job.source,
            channels=job.input_channels, threshold=job.threshold, int8=int8,
            integer_only=self.integer_only,
        )
        return StampedFile(self.converter.embed_metadata(model_bytes, metadata), info, metadata)
