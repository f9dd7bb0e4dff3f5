"""Calibration variants: a calibration (`"percentile"`, `"minmax"`, `"entropy"`) and what is
done to the weights before quantizing, as one string.

- `"percentile"`: the weights as they are, rounded to nearest by the quantizer;
- `"percentile+bias"`: each convolution's bias corrected for the mean shift its nearest-rounded
  int8 weights cause (`bias_correction`);
- `"percentile+gptq"`: each convolution's weights rounded against the calibration data
  (`weight_rounding`), which removes that shift and most of the rest of the rounding error.

Example:
```python
from keras_unet.export.quantization.variants import parse_variant

parse_variant("minmax+gptq")   # Variant(base='minmax', treatment='gptq')
```
"""

import dataclasses
from typing import Optional

BIAS_SUFFIX = "+bias"
GPTQ_SUFFIX = "+gptq"
_TREATMENTS = {BIAS_SUFFIX: "bias", GPTQ_SUFFIX: "gptq"}
_WORDS = {"bias": "biases corrected for the int8 weights",
          "gptq": "weights rounded against the calibration data (GPTQ)"}


@dataclasses.dataclass(frozen=True)
class Variant:
    """`base`: the calibration; `treatment`: None, `"bias"` or `"gptq"`."""

    base: str
    treatment: Optional[str] = None

    @property
    def corrected(self) -> bool:
        return self.treatment == "bias"

    @property
    def rounded(self) -> bool:
        return self.treatment == "gptq"


def parse_variant(variant: str) -> Variant:
    """`Variant("percentile", "bias")` for `"percentile+bias"`, `Variant("minmax")` for `"minmax"`."""
    for suffix, treatment in _TREATMENTS.items():
        if variant.endswith(suffix):
            return Variant(variant[: -len(suffix)], treatment)
    return Variant(variant)


def variant_words(variant: str) -> str:
    """`"minmax+bias"` -> `"minmax calibration, biases corrected for the int8 weights"`."""
    parsed = parse_variant(variant)
    words = f"{parsed.base} calibration"
    return words + (f", {_WORDS[parsed.treatment]}" if parsed.treatment else "")
