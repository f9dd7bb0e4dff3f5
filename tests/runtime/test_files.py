"""Atomic writes: the user's normal permissions, nothing left behind, NaN written as null."""

import json
import os
import stat

import pytest

from keras_unet.runtime.files import atomic_output, write_json_atomic, write_text_atomic


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_files_get_the_permissions_a_plain_open_gives(tmp_path):
    write_json_atomic(tmp_path / "bench.json", {"iou": 0.5})
    write_text_atomic(tmp_path / "bench.csv", "a,b\n")
    with open(tmp_path / "plain.txt", "w"):
        pass
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~_umask()
    for name in ("bench.json", "bench.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected


def test_a_failed_write_keeps_the_earlier_file_and_no_temporary(tmp_path):
    out = tmp_path / "model.tflite"
    out.write_bytes(b"earlier")
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("conversion failed")
    assert out.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_json_writes_non_finite_numbers_as_null(tmp_path):
    import numpy as np

    write_json_atomic(tmp_path / "m.json", {"loss": float("nan"), "iou": [np.float32(0.5), float("inf")]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"loss": None, "iou": [0.5, None]}


def test_a_ctrl_c_just_after_the_temporary_is_created_leaves_no_file(tmp_path, monkeypatch):
    real_open = os.open

    def open_then_interrupted(path, *args):
        fd = real_open(path, *args)  # the file exists now, before the caller records it
        os.close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr("keras_unet.runtime.files.os.open", open_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(tmp_path / "model.keras"):
            pass
    assert os.listdir(tmp_path) == []


def test_another_writers_temporary_with_the_same_name_is_left_alone(tmp_path, monkeypatch):
    names = iter(["aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr("keras_unet.runtime.files.secrets.token_hex", lambda n: next(names))
    theirs = tmp_path / ".model.aaaaaaaa.tmp.json"
    theirs.write_text("theirs")
    write_text_atomic(tmp_path / "model.json", "ours")
    assert theirs.read_text() == "theirs" and (tmp_path / "model.json").read_text() == "ours"
    assert sorted(os.listdir(tmp_path)) == [".model.aaaaaaaa.tmp.json", "model.json"]
