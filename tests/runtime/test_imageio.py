"""keras_unet.runtime.imageio: pairing, reading, mask encodings, resizing; TF-free."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_unet.runtime import imageio
from keras_unet.runtime.images import exif_orientation

REPO = Path(__file__).resolve().parents[2]


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _pair_dir(root, stems=("a", "b"), size=(6, 8), image_ext=".png"):
    rng = np.random.default_rng(0)
    for stem in stems:
        _save(root / "images" / f"{stem}{image_ext}",
              rng.integers(0, 256, size + (3,), dtype=np.uint8))
        _save(root / "masks" / f"{stem}.png",
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
    _save(tmp_path / "masks" / "lonely.png", np.zeros((6, 8), np.uint8))
    with pytest.raises(ValueError, match="no matching image.*lonely.png"):
        imageio.list_pairs(tmp_path)


def test_list_pairs_image_without_mask_names_file(tmp_path):
    _pair_dir(tmp_path)
    _save(tmp_path / "images" / "orphan.jpg", np.zeros((6, 8, 3), np.uint8))
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
    _save(tmp_path / "images" / "a.jpg", np.zeros((6, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="share the stem 'a'"):
        imageio.list_pairs(tmp_path)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif"])
def test_read_image_formats_and_channels(tmp_path, ext):
    gray = np.tile(np.arange(0, 240, 30, dtype=np.uint8), (4, 1))
    path = _save(tmp_path / f"g{ext}", gray)
    rgb = imageio.read_image(path, channels=3)
    assert rgb.shape == (4, 8, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    one = imageio.read_image(path, channels=1)
    assert one.shape == (4, 8, 1)
    if ext != ".jpg":  # lossless formats keep the exact values
        assert np.array_equal(one[..., 0], gray)


def test_read_image_rgb_to_gray_uses_luma(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    path = _save(tmp_path / "c.png", rgb)
    gray = imageio.read_image(path, channels=1)[..., 0]
    expected = np.round(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[0]
    assert np.array_equal(gray[0], expected)


def test_read_image_rgba_and_16_bit(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    image = imageio.read_image(_save(tmp_path / "a.png", rgba), channels=3)
    assert image.shape == (2, 3, 3) and (image[..., 0] == 200).all()
    deep = np.full((2, 3), 40000, np.uint16)
    image16 = imageio.read_image(_save(tmp_path / "d.png", deep), channels=1)
    assert image16.dtype == np.uint8 and (image16 == 40000 >> 8).all()


def test_truncated_and_non_image_files_are_named(tmp_path):
    path = _save(tmp_path / "t.png", np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
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
    assert np.array_equal(imageio.read_mask(_save(tmp_path / "g.png", gray_as_rgb)), index)
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = (128, 0, 0)
    with pytest.raises(ValueError, match=r"c\.png.*colour image"):
        imageio.read_mask(_save(tmp_path / "c.png", colour))


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
    _save(tmp_path / "masks" / "b.png", np.zeros((5, 8), np.uint8))
    with pytest.raises(ValueError, match=r"b\.png.*8x5.*8x6"):
        imageio.load_dataset_arrays(tmp_path, size=(4, 4))


def test_native_size_must_agree_without_size(tmp_path):
    _pair_dir(tmp_path, stems=("a",), size=(6, 8))
    _pair_dir(tmp_path, stems=("b",), size=(7, 8))
    with pytest.raises(ValueError, match="pass `size`"):
        imageio.load_dataset_arrays(tmp_path)


# EXIF orientation: images (and masks) are read upright, as viewers show them.

# What a viewer shows for stored pixels `a` under each EXIF orientation.
UPRIGHT = {
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.swapaxes(np.rot90(a, 2), 0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _save_oriented(path, array, orientation, **options):
    """Save `array` as stored pixels with EXIF orientation `orientation`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif, **options)
    return path


def _pattern(height=4, width=6):
    """An RGB pattern that no flip or rotation maps onto itself."""
    return (np.arange(height * width * 3).reshape(height, width, 3) * 3 % 256).astype(np.uint8)


def _blocks():
    """Flat 8x8 gray blocks (survive JPEG almost exactly), asymmetric: 24 wide, 16 high."""
    return np.kron(np.array([[0, 50, 100], [150, 200, 250]], np.uint8), np.ones((8, 8), np.uint8))


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_read_image_applies_exif_orientation_lossless(tmp_path, ext, orientation):
    stored = _pattern()
    path = _save_oriented(tmp_path / f"o{orientation}{ext}", stored, orientation)
    image = imageio.read_image(path, channels=3)
    expected = UPRIGHT[orientation](stored)
    assert np.array_equal(image, expected)
    assert imageio.image_size(path) == image.shape[:2] == expected.shape[:2]
    assert exif_orientation(path) == orientation


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_read_image_applies_exif_orientation_jpeg(tmp_path, orientation):
    stored = _blocks()
    path = _save_oriented(tmp_path / f"o{orientation}.jpg", stored, orientation, quality=95)
    image = imageio.read_image(path, channels=1)[..., 0]
    expected = UPRIGHT[orientation](stored)
    assert image.shape == expected.shape
    assert np.abs(image.astype(int) - expected).max() <= 8
    assert imageio.image_size(path) == image.shape[:2]
    assert imageio.read_image(path, channels=3).shape == expected.shape + (3,)


def test_image_without_or_with_upright_orientation_is_unchanged(tmp_path):
    stored = _pattern()
    for name, orientation in (("plain.png", None), ("one.png", 1), ("bad.png", 9)):
        path = (_save(tmp_path / name, stored) if orientation is None
                else _save_oriented(tmp_path / name, stored, orientation))
        assert np.array_equal(imageio.read_image(path), stored)
        assert imageio.image_size(path) == (4, 6)
        assert exif_orientation(path) == 1


def test_png_exif_after_pixel_data_is_seen_by_image_size(tmp_path):
    # PNG allows the eXIf chunk after IDAT; pillow sees it only when decoding, and the
    # header-only image_size must still agree with read_image.
    import struct
    import zlib

    stored = _pattern()
    path = _save(tmp_path / "late.png", stored)
    exif = Image.Exif()
    exif[0x0112] = 6
    payload = exif.tobytes()[6:]  # without the "Exif\0\0" JPEG prefix
    chunk = (struct.pack(">I", len(payload)) + b"eXIf" + payload
             + struct.pack(">I", zlib.crc32(b"eXIf" + payload) & 0xFFFFFFFF))
    data = path.read_bytes()
    end = data.rindex(b"IEND") - 4
    path.write_bytes(data[:end] + chunk + data[end:])
    with Image.open(path) as header:
        assert "exif" not in header.info  # really after the pixels
    image = imageio.read_image(path)
    assert np.array_equal(image, np.rot90(stored, -1))
    assert imageio.image_size(path) == image.shape[:2] == (6, 4)


def test_read_mask_with_exif_orientation_is_upright(tmp_path):
    stored = np.zeros((4, 6), np.uint8)
    stored[0, :2] = 255  # top-left corner: a rotation moves it
    path = _save_oriented(tmp_path / "m.png", stored, 6)
    assert np.array_equal(imageio.read_mask(path), np.rot90(stored, -1))
    index = np.arange(24, dtype=np.uint8).reshape(4, 6) % 5
    palette = Image.fromarray(index, "P")
    palette.putpalette([v for c in range(256) for v in (c * 40 % 256, c, 0)])
    exif = Image.Exif()
    exif[0x0112] = 8
    palette.save(tmp_path / "p.png", exif=exif)
    assert np.array_equal(imageio.read_mask(tmp_path / "p.png"), np.rot90(index, 1))
    plain = _save(tmp_path / "plain.png", stored)  # the usual mask: no EXIF, read as stored
    assert np.array_equal(imageio.read_mask(plain), stored)


def _rotated_pair(root, mask_upright=True, stem="a"):
    """A JPEG stored 24x16 (WxH) with orientation 6 (shown 16x24) and its mask."""
    stored = _blocks()
    _save_oriented(root / "images" / f"{stem}.jpg", stored, 6, quality=95)
    mask = (stored >= 150).astype(np.uint8) * 255  # the bottom row of blocks, as stored
    _save(root / "masks" / f"{stem}.png", np.rot90(mask, -1) if mask_upright else mask)
    return root / "images" / f"{stem}.jpg", root / "masks" / f"{stem}.png"


def test_upright_mask_lines_up_with_upright_image(tmp_path):
    image_path, mask_path = _rotated_pair(tmp_path)
    image, mask = imageio.read_pair(image_path, mask_path, channels=1)
    assert image.shape == (24, 16, 1) and mask.shape == (24, 16)
    assert np.array_equal(mask, (image[..., 0] >= 125).astype(np.int32))
    from keras_unet.data.pairs import check_pairs

    for check_images in (True, False):  # decoded, and header only (image_size)
        assert check_pairs([(image_path, mask_path)], check_images=check_images)


def test_mask_of_the_stored_pixels_is_refused_clearly(tmp_path):
    image_path, mask_path = _rotated_pair(tmp_path, mask_upright=False)
    with pytest.raises(ValueError, match=r"a\.png.*24x16.*a\.jpg.*16x24") as error:
        imageio.read_pair(image_path, mask_path)
    assert "\n" not in str(error.value)
    from keras_unet.data.pairs import check_pairs

    for check_images in (True, False):
        with pytest.raises(ValueError, match=r"a\.png.*24x16.*16x24"):
            check_pairs([(image_path, mask_path)], check_images=check_images)
    from keras_unet.runtime.masks import check_mask_size

    with pytest.raises(ValueError, match=r"24x16.*16x24.*EXIF orientation 6.*Rotate the mask"):
        check_mask_size((16, 24), (24, 16, 1), mask_path, image_path)
    with pytest.raises(ValueError, match=r"size\.$"):  # no EXIF: no hint
        check_mask_size((16, 24), (24, 16), mask_path, tmp_path / "masks" / "a.png")
    check_mask_size((24, 16), (24, 16, 3), mask_path, image_path)


def test_numpy_batches_read_upright_images(tmp_path):
    from keras_unet.data import iterate_batches

    _rotated_pair(tmp_path)
    images, masks = next(iterate_batches(tmp_path, image_size=(24, 16), channels=1,
                                         batch_size=1, shuffle=False))
    expected = np.rot90(_blocks(), -1)
    assert np.abs(images[0, ..., 0] - expected).max() <= 8
    assert np.array_equal(masks[0, ..., 0], (expected >= 150).astype(np.float32))


@pytest.mark.slow  # imports TensorFlow (several seconds)
def test_tf_data_pipeline_reads_upright_images(tmp_path):
    pytest.importorskip("tensorflow")
    from keras_unet.data import load_dataset

    _rotated_pair(tmp_path)
    dataset = load_dataset(tmp_path, image_size=(24, 16), channels=1, batch_size=1,
                           shuffle=False, cache=False)
    images, masks = next(iter(dataset))
    expected = np.rot90(_blocks(), -1)
    assert images.shape == (1, 24, 16, 1)
    assert np.abs(images.numpy()[0, ..., 0] - expected).max() <= 8
    assert np.array_equal(masks.numpy()[0, ..., 0], (expected >= 150).astype(np.float32))


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
    path = _save(tmp_path / "locked.png", _pattern())
    path.chmod(0)
    try:
        for reader in (imageio.read_image, imageio.read_mask, imageio.image_size):
            _refusal(PermissionError, r"Cannot read the .*locked\.png.*permission denied", reader, path)
    finally:
        path.chmod(0o644)


def test_permission_error_from_pillow_is_named(tmp_path, monkeypatch):
    # The same refusal as above, where the tests run as root (pillow's open is made to fail).
    path = _save(tmp_path / "locked.png", _pattern())

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", refuse)
    _refusal(PermissionError, r"Cannot read the image file .*locked\.png.*permission denied",
             imageio.read_image, path)


def test_decompression_bomb_is_refused_with_the_limit(tmp_path, monkeypatch):
    path = _save(tmp_path / "big.png", _pattern())  # 24 pixels
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
