"""The integer-only rule of the export pipeline (`pipeline.require_integer_only`) and the options
that lead to it, without converting anything: a format names the ops of a file that compute in
float, and an integer-only export with any of them is refused with their names."""

import types

import pytest

from keras_unet.export.options import ExportOptions
from keras_unet.export.pipeline import require_integer_only


def _converter(float_ops):
    return types.SimpleNamespace(float_ops=float_ops, result_format="scripted")


def test_a_file_with_float_ops_is_refused_naming_them():
    options = ExportOptions(quantize="int8", integer_only=True)
    ops = [f"CONV_2D conv{i}" for i in range(8)]
    with pytest.raises(RuntimeError, match=r"not integer-only: 8 op\(s\) compute in float "
                                           r"\(CONV_2D conv0, .* CONV_2D conv5 \.\.\.\)"):
        require_integer_only(_converter(lambda model_bytes: ops), options, b"file")


def test_an_integer_file_passes_and_the_rule_is_off_by_default():
    require_integer_only(_converter(lambda model_bytes: []), ExportOptions(quantize="int8",
                                                                           integer_only=True), b"")
    require_integer_only(_converter(lambda model_bytes: ["ADD"]), ExportOptions(quantize="int8"), b"")


def test_a_format_that_cannot_tell_refuses_the_option():
    with pytest.raises(ValueError, match="`integer_only` is not available for scripted files"):
        require_integer_only(_converter(None), ExportOptions(quantize="int16x8", integer_only=True), b"")


@pytest.mark.parametrize("quantize", ["none", "fp16", "dynamic"])
def test_integer_only_needs_a_static_mode(quantize):
    with pytest.raises(ValueError, match="integer-only file needs quantize='int8' or 'int16x8'"):
        ExportOptions(quantize=quantize, integer_only=True).check()


def test_int16x8_repairs_by_default_like_int8():
    assert ExportOptions(quantize="int16x8").repairs and ExportOptions(quantize="int8").repairs
    assert not ExportOptions(quantize="fp16").repairs
