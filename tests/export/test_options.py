"""The pieces of the export pipeline that need no conversion: `ExportOptions` (every default
declared once), the `Int8Session` contract, and the declared rewrites of a converted file."""

import dataclasses
import inspect
import types

import pytest

from keras_unet.export.converter import Rewrite, apply_rewrites
from keras_unet.export.int8_session import Int8Session, QATSession
from keras_unet.export.options import ExportOptions


@pytest.mark.parametrize("module, name", [("keras_unet.export.tflite", "export_tflite"),
                                          ("keras_unet.export.onnx", "export_onnx")])
def test_the_api_defaults_are_the_options_defaults(module, name):
    import importlib

    function = getattr(importlib.import_module(module), name)
    fields = {field.name: field.default for field in dataclasses.fields(ExportOptions)}
    parameters = inspect.signature(function).parameters
    shared = [p for p in parameters if p in fields]
    assert len(shared) >= 15  # nearly every option is an ExportOptions field
    for parameter in shared:
        assert parameters[parameter].default == fields[parameter], parameter
    assert fields["calibration_size"] == 100 and fields["verification_size"] == 32


def test_options_are_frozen_and_resolve_batch_and_repair():
    options = ExportOptions(quantize="int8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.quantize = "none"
    assert options.batch == 1 and options.repairs
    assert ExportOptions(dynamic_batch=True).batch is None
    assert not ExportOptions(quantize="int8", repair=False).repairs
    assert not ExportOptions().repairs


@pytest.mark.parametrize("changes, message", [
    (dict(output="logits"), "`output` must be one of"),
    (dict(agreement_floor=1.5), "agreement_floor"),
    (dict(agreement_floor=True), "agreement_floor"),
    (dict(quantize="fp16", repair=True), "does not apply to quantize='fp16'"),
])
def test_options_out_of_range_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        ExportOptions(**changes).check()


def test_an_int8_session_must_convert_and_has_defaults_for_the_rest():
    with pytest.raises(TypeError, match="abstract"):
        Int8Session(job=None, options=None)

    class Minimal(Int8Session):
        variants = ("minmax",)

        def convert(self, keep_float, variant, keep_int16=()):
            return b"raw"

    upper = Rewrite("upper case", bytes.upper, modes=("int8",))
    session = Minimal(job=None, options=None, rewrites=(upper,))
    assert session.quantize([], "minmax") == b"RAW"  # the format's rewrites, applied once
    assert session.report(None, [], "minmax") is None and session.leading_nodes() == []
    assert session.expand(["a"]) == ["a"] and session.time_ms(b"") is None
    assert session.metadata == {} and session.can_keep_float


def test_a_qat_session_keeps_nothing_float_and_reports_nothing():
    class Learned(QATSession):
        def convert_qat(self):
            return b"qat"

    job = types.SimpleNamespace(cached=lambda key, build: build())
    session = Learned(job, options=None)
    assert session.variants == ("qat",) and not session.can_keep_float
    assert session.quantize([], "qat") == b"qat" and session.report(None, [], "qat") is None
    with pytest.raises(ValueError, match="no layer is kept at another precision"):
        session.quantize(["conv"], "qat")


def test_rewrites_run_in_order_on_their_modes():
    rewrites = (Rewrite("append a", lambda data: data + b"a"),
                Rewrite("append b (int8)", lambda data: data + b"b", modes=("int8",)))
    assert apply_rewrites(rewrites, b"", "int8") == b"ab"
    assert apply_rewrites(rewrites, b"", "none") == b"a"


def test_each_format_declares_its_rewrites_and_sessions():
    from keras_unet.export import onnx, ort, tflite

    assert [r.name for r in tflite.CONVERTER.rewrites][0].startswith("int8 requantizations")
    assert all(r.modes == ("int8",) for r in onnx.CONVERTER.rewrites)
    for converter in (tflite.CONVERTER, onnx.CONVERTER):
        assert issubclass(converter.int8_session, Int8Session)
        assert issubclass(converter.qat_session, QATSession)
    assert ort.CONVERTER.result_format == "ort" and ort.CONVERTER.package is not None
    assert ort.CONVERTER.rewrites == onnx.CONVERTER.rewrites  # .ort is ONNX plus a pass
