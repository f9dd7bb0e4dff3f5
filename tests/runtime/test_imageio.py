"""keras_unet.runtime.imageio: pairing, reading, mask encodings, resizing; TF-free."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from image_files import asymmetric_pattern, save_image
from PIL import Image

from keras_unet.runtime import imageio

REPO = Path(__file__).resolve().parents[2]


def _pair_dir(root, stems=("a", "b"), size=(6, 8), image_ext=".png"):
    rng = np.random.default_rng(0)
    for stem in stems:
        save_image(root / "images" / f"{stem}{image_ext}",
              rng.integers(0, 256, size + (3,), dtype=np.uint8))
        save_image(root / "masks" / f"{stem}.png",
              (rng.random(size) > 0.5).astype(np.uint8) * 255)
    return root


def test_import_pulls_in_no_tensorflow_or_keras():
    code = ("import sys, keras_unet.runtime.imageio; "
            "bad = [m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout


def test_list_pairs_sorted_by_stem(tmp_path):
    _pair_dir(tmp_path, stems=("b", "a", "c"))
    pairs = imageio.list_pairs(tmp_path)
    assert [p[0].stem for p in pairs] == ["a", "b", "c"]
    assert all(i.stem == m.stem and m.parent.name == "masks" for i, m in pairs)


def test_list_pairs_mask_without_image_names_file(tmp_path):
    _pair_dir(tmp_path)
    save_image(tmp_path / "masks" / "lonely.png", np.zeros((6, 8), np.uint8))
    with pytest.raises(ValueError, match="no matching image.*lonely.png"):
        imageio.list_pairs(tmp_path)


def test_list_pairs_image_without_mask_names_file(tmp_path):
    _pair_dir(tmp_path)
    save_image(tmp_path / "images" / "orphan.jpg", np.zeros((6, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="no matching mask.*orphan.jpg"):
        imageio.list_pairs(tmp_path)


def test_list_pairs_empty_and_missing_folders(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        imageio.list_pairs(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        imageio.list_pairs(tmp_path / "images")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        imageio.list_pairs(tmp_path / "nope")


def test_list_pairs_duplicate_stems(tmp_path):
    _pair_dir(tmp_path)
    save_image(tmp_path / "images" / "a.jpg", np.zeros((6, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="share the stem 'a'"):
        imageio.list_pairs(tmp_path)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_read_image_formats_and_channels(tmp_path, ext):
    gray = np.tile(np.arange(0, 240, 30, dtype=np.uint8), (4, 1))
    path = save_image(tmp_path / f"g{ext}", gray)
    rgb = imageio.read_image(path, channels=3)
    assert rgb.shape == (4, 8, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    one = imageio.read_image(path, channels=1)
    assert one.shape == (4, 8, 1)
    if ext != ".jpg":  # lossless formats keep the exact values
        assert np.array_equal(one[..., 0], gray)


def test_read_image_rgb_to_gray_uses_luma(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    path = save_image(tmp_path / "c.png", rgb)
    gray = imageio.read_image(path, channels=1)[..., 0]
    expected = np.round(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[0]
    assert np.array_equal(gray[0], expected)


def test_read_image_rgba_and_16_bit(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    image = imageio.read_image(save_image(tmp_path / "a.png", rgba), channels=3)
    assert image.shape == (2, 3, 3) and (image[..., 0] == 200).all()
    deep = np.full((2, 3), 40000, np.uint16)
    image16 = imageio.read_image(save_image(tmp_path / "d.png", deep), channels=1)
    assert image16.dtype == np.uint8 and (image16 == 40000 >> 8).all()


def test_truncated_and_non_image_files_are_named(tmp_path):
    path = save_image(tmp_path / "t.png", np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="t.png"):
        imageio.read_image(path)
    junk = tmp_path / "junk.jpg"
    junk.write_text("not an image")
    with pytest.raises(ValueError, match="junk.jpg"):
        imageio.read_image(junk)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        imageio.read_mask(tmp_path / "missing.png")


def test_read_mask_palette_one_bit_and_colour(tmp_path):
    index = np.array([[0, 1, 2], [11, 3, 0]], np.uint8)
    palette = Image.fromarray(index, "P")
    palette.putpalette([v for c in range(256) for v in (c * 7 % 256, c * 3 % 256, c)])
    palette.save(tmp_path / "p.png")
    assert np.array_equal(imageio.read_mask(tmp_path / "p.png"), index)

    Image.fromarray(np.array([[True, False]])).save(tmp_path / "b.png")
    assert imageio.read_mask(tmp_path / "b.png").tolist() == [[1, 0]]

    gray_as_rgb = np.repeat(index[..., None], 3, axis=-1)
    assert np.array_equal(imageio.read_mask(save_image(tmp_path / "g.png", gray_as_rgb)), index)
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = (128, 0, 0)
    with pytest.raises(ValueError, match=r"c\.png.*colour image"):
        imageio.read_mask(save_image(tmp_path / "c.png", colour))


def test_decode_binary():
    assert imageio.decode_mask(np.array([[0, 255]], np.uint8), "binary").tolist() == [[0, 1]]
    assert imageio.decode_mask(np.array([[1, 0]], np.uint8), "binary").tolist() == [[1, 0]]
    out = imageio.decode_mask(np.array([[0, 1, 255]], np.uint8), "binary", ignore_index=255)
    assert out.tolist() == [[0, 1, 255]] and out.dtype == np.int32
    with pytest.raises(ValueError, match=r"m\.png.*binary.*bad: \[7\]"):
        imageio.decode_mask(np.array([[0, 7, 255]], np.uint8), "binary", path="m.png")
    with pytest.raises(ValueError, match="1 and 255 mixed"):  # without ignore_index
        imageio.decode_mask(np.array([[0, 1, 255]], np.uint8), "binary")


def test_decode_index_checks_num_classes_and_ignore():
    raw = np.array([[0, 3, 11]], np.uint8)
    out = imageio.decode_mask(raw, "index", num_classes=11, ignore_index=11)
    assert out.tolist() == [[0, 3, 11]]
    with pytest.raises(ValueError, match=r"camvid\.png.*class index 11.*num_classes=11.*ignore_index=11"):
        imageio.decode_mask(raw, "index", num_classes=11, path="camvid.png")
    with pytest.raises(ValueError, match="num_classes >= 12"):
        imageio.decode_mask(raw, "index", num_classes=4, ignore_index=None)


def test_decode_trimap():
    raw = np.array([[1, 2, 3]], np.uint8)
    assert imageio.decode_mask(raw, "trimap").tolist() == [[1, 0, 1]]
    assert imageio.decode_mask(raw, "trimap", ignore_index=255).tolist() == [[1, 0, 255]]
    with pytest.raises(ValueError, match="trimap"):
        imageio.decode_mask(np.array([[0, 1]], np.uint8), "trimap")


def test_auto_encoding_rules():
    assert imageio.resolve_encoding([0, 255]) == "binary"
    assert imageio.resolve_encoding([255]) == "binary"
    assert imageio.resolve_encoding([0, 1], num_classes=1) == "binary"
    assert imageio.resolve_encoding([0, 1, 2], num_classes=3) == "index"
    assert imageio.resolve_encoding([0, 255], ignore_index=255, num_classes=3) == "index"
    assert imageio.decode_mask(np.array([[0, 255]], np.uint8), num_classes=2).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="binary"):
        imageio.decode_mask(np.array([[0, 2]], np.uint8), "auto", num_classes=1)
    with pytest.raises(ValueError, match="mask_encoding"):
        imageio.decode_mask(np.zeros((2, 2), np.uint8), "rgb")


def test_resize_mask_is_nearest_and_adds_no_values():
    rng = np.random.default_rng(0)
    mask = rng.choice(np.array([0, 3, 11]), size=(37, 23)).astype(np.int32)
    out = imageio.resize_mask(mask, (16, 50))
    assert out.shape == (16, 50) and set(np.unique(out)) <= {0, 3, 11}
    rows = np.floor((np.arange(16) + 0.5) * 37 / 16).astype(int)
    cols = np.floor((np.arange(50) + 0.5) * 23 / 50).astype(int)
    assert np.array_equal(out, mask[np.ix_(rows, cols)])


def test_pad_mode_centres_and_fills():
    image = np.full((2, 4, 3), 9, np.uint8)
    padded = imageio.resize_image(image, (4, 6), mode="pad")
    assert padded.shape == (4, 6, 3)
    assert (padded[1:3, 1:5] == 9).all() and padded.sum() == 9 * 2 * 4 * 3
    mask = np.ones((2, 4), np.int32)
    padded_mask = imageio.resize_mask(mask, (4, 6), mode="pad", pad_value=255)
    assert padded_mask[0, 0] == 255 and (padded_mask[1:3, 1:5] == 1).all()
    cropped = imageio.resize_image(np.arange(36, dtype=np.uint8).reshape(6, 6), (2, 2), mode="pad")
    assert cropped.tolist() == [[14, 15], [20, 21]]


def test_resize_image_bilinear_keeps_dtype_and_range():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:] = 200
    out = imageio.resize_image(image, (4, 4))
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert out[:, 0].max() < 50 and out[:, -1].min() > 150
    two = imageio.resize_image(np.zeros((8, 8, 2), np.float32), (4, 6))
    assert two.shape == (4, 6, 2) and two.dtype == np.float32
    with pytest.raises(ValueError, match="size"):
        imageio.resize_image(image, (0, 4))


def test_load_dataset_arrays(tmp_path):
    _pair_dir(tmp_path, stems=("a", "b", "c"), size=(10, 12))
    images, masks = imageio.load_dataset_arrays(tmp_path, size=(8, 8), channels=1)
    assert images.shape == (3, 8, 8, 1) and images.dtype == np.uint8
    assert masks.shape == (3, 8, 8) and set(np.unique(masks)) <= {0, 1}
    native, _ = imageio.load_dataset_arrays(tmp_path, channels=3)
    assert native.shape == (3, 10, 12, 3)


def test_mask_size_mismatch_names_both_files(tmp_path):
    _pair_dir(tmp_path)
    save_image(tmp_path / "masks" / "b.png", np.zeros((5, 8), np.uint8))
    with pytest.raises(ValueError, match=r"b\.png.*8x5.*8x6"):
        imageio.load_dataset_arrays(tmp_path, size=(4, 4))


def test_native_size_must_agree_without_size(tmp_path):
    _pair_dir(tmp_path, stems=("a",), size=(6, 8))
    _pair_dir(tmp_path, stems=("b",), size=(7, 8))
    with pytest.raises(ValueError, match="pass `size`"):
        imageio.load_dataset_arrays(tmp_path)


# Refusals: one line naming the file and the reason.


def _refusal(error_type, match, call, *args):
    with pytest.raises(error_type, match=match) as error:
        call(*args)
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize("reader", [imageio.read_image, imageio.read_mask, imageio.image_size])
def test_refusals_name_the_file_and_the_reason(tmp_path, reader):
    folder = tmp_path / "folder.png"
    folder.mkdir()
    _refusal(IsADirectoryError, r"folder\.png.* is a folder", reader, folder)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    _refusal(ValueError, r"empty\.png.* is empty \(0 bytes\)", reader, empty)
    unknown = tmp_path / "unknown.png"
    unknown.write_bytes(b"GIF89 but not really an image" * 4)
    _refusal(ValueError, r"unknown\.png.*unknown or unsupported format", reader, unknown)
    _refusal(FileNotFoundError, r"does not exist.*missing\.png", reader, tmp_path / "missing.png")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads files whatever their mode")
def test_unreadable_file_is_a_permission_error(tmp_path):
    path = save_image(tmp_path / "locked.png", asymmetric_pattern())
    path.chmod(0)
    try:
        for reader in (imageio.read_image, imageio.read_mask, imageio.image_size):
            _refusal(PermissionError, r"Cannot read the .*locked\.png.*permission denied", reader, path)
    finally:
        path.chmod(0o644)


def test_permission_error_from_pillow_is_named(tmp_path, monkeypatch):
    # The same refusal as above, where the tests run as root (pillow's open is made to fail).
    path = save_image(tmp_path / "locked.png", asymmetric_pattern())

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", refuse)
    _refusal(PermissionError, r"Cannot read the image file .*locked\.png.*permission denied",
             imageio.read_image, path)


def test_decompression_bomb_is_refused_with_the_limit(tmp_path, monkeypatch):
    path = save_image(tmp_path / "big.png", asymmetric_pattern())  # 24 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # pillow refuses above 2 x 10
    for reader in (imageio.read_image, imageio.read_mask, imageio.image_size):
        message = _refusal(ValueError, r"big\.png.*24 pixels.*MAX_IMAGE_PIXELS \(10\)", reader, path)
        assert "PIL.Image.MAX_IMAGE_PIXELS = 24" in message
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # over the limit, under twice it: read
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert imageio.read_image(path).shape == (4, 6, 3)
    named = [str(w.message) for w in caught if issubclass(w.category, Image.DecompressionBombWarning)
             and "big.png" in str(w.message)]
    assert len(named) == 1 and "24 pixels" in named[0] and "\n" not in named[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        _refusal(ValueError, r"big\.png.*24 pixels.*warning filters", imageio.read_image, path)


def test_unprintable_file_name_is_quoted_on_one_line(tmp_path):
    path = tmp_path / "two\nlines.png"
    path.write_bytes(b"")
    _refusal(ValueError, r"two\\nlines\.png", imageio.read_image, path)
