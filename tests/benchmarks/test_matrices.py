"""The int8 and QAT matrix scripts: their verdicts and tables (the runs themselves are the
CLI's train, export and bench, tested where those are)."""

import pytest

from keras_unet.benchmarks import int8_matrix, qat_matrix


def _row(**changes):
    row = {"model": "vanilla", "file": "int8.tflite", "method": "qat", "agreement_iou": 0.995,
           "iou_drop": 0.001, "p50_ratio": 0.2, "kept_float": [], "error": None}
    row.update(changes)
    return row


@pytest.mark.parametrize("changes, meets", [
    ({}, True),
    ({"agreement_iou": 0.985}, False),
    ({"iou_drop": 0.004}, False),
    ({"kept_float": ["decoder_block_0"]}, False),  # QAT promises every layer in int8
    ({"error": "not written"}, False),
])
def test_qat_targets(changes, meets):
    assert qat_matrix.meets_targets(_row(**changes)) is meets


def test_int8_targets_include_latency():
    assert int8_matrix.meets_targets(_row(agreement_iou=0.986, iou_drop=0.004, p50_ratio=0.30))
    assert not int8_matrix.meets_targets(_row(agreement_iou=0.986, iou_drop=0.004, p50_ratio=0.31))
    assert not int8_matrix.meets_targets(_row(agreement_iou=0.984, iou_drop=0.004, p50_ratio=0.30))


def test_the_qat_table_marks_only_qat_rows_against_the_targets():
    rows = [_row(method="post-training", agreement_iou=0.97), _row(agreement_iou=0.97),
            _row(file="int8.onnx"), {"model": "resnet50", "file": "int8.onnx",
                                     "method": "qat", "error": "not written"}]
    lines = qat_matrix.format_table(rows).splitlines()
    assert lines[1].rstrip().endswith("0")  # post-training: no verdict column
    assert lines[2].endswith("NO") and lines[3].endswith("yes")
    assert "not written" in lines[4]


def test_qat_epochs_must_be_positive(capsys):
    with pytest.raises(SystemExit) as stopped:
        qat_matrix.main(["--data", "d", "--work", "w", "--qat-epochs", "0"])
    assert stopped.value.code == 2 and "--qat-epochs" in capsys.readouterr().err
